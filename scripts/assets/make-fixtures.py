"""Regenerate the small committed test fixtures in tests/fixtures/ from the asset cache.

  fashion-mnist/  first 256 train and first 128 test images + labels, gzipped IDX
                  (standard names, headers carry the reduced counts; gzip mtime 0)
  emoji/          emoji.json trimmed to 12 entries (4 categories x 3) + their 64 px PNGs,
                  same layout as $EOSTOK_ASSETS/emoji (img/google/64/<image>)
  images/         ImageFolder: images/<class>/<n>.png, 3 classes x 4 RGB 32x32 images made
                  from the fashion-mnist fixture (28x28 padded by 2 px), plus images/bag/corrupt.png
  README.md       provenance

Deterministic: running it twice gives byte-identical files.

usage: make-fixtures.py ASSETS_DIR FIXTURES_DIR   (run with $EOSTOK_ASSETS/venv/bin/python)
"""
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

from idx import read_idx, write_idx_gz

N_TRAIN, N_TEST = 256, 128
EMOJI_CATEGORIES = ["Smileys & Emotion", "Animals & Nature", "Food & Drink", "Travel & Places"]
EMOJI_PER_CATEGORY = 3
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
IMAGE_CLASSES = {"bag": 8, "sneaker": 7, "trouser": 1}  # folder name -> Fashion-MNIST label
IMAGES_PER_CLASS = 4
CORRUPT = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\xde\xad\xbe\xef"  # PNG signature, then garbage


def fashion(assets, out):
    os.makedirs(out, exist_ok=True)
    src = os.path.join(assets, "fashion-mnist")
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        imgs = read_idx(os.path.join(src, f"{split}-images-idx3-ubyte.gz"))[:n]
        labels = read_idx(os.path.join(src, f"{split}-labels-idx1-ubyte.gz"))[:n]
        write_idx_gz(os.path.join(out, f"{split}-images-idx3-ubyte.gz"), imgs)
        write_idx_gz(os.path.join(out, f"{split}-labels-idx1-ubyte.gz"), labels)
        assert read_idx(os.path.join(out, f"{split}-images-idx3-ubyte.gz")).shape == (n, 28, 28)
    return read_idx(os.path.join(out, "train-images-idx3-ubyte.gz")), read_idx(os.path.join(out, "train-labels-idx1-ubyte.gz"))


def emoji(assets, out):
    src = os.path.join(assets, "emoji")
    with open(os.path.join(src, "emoji.json")) as f:
        entries = json.load(f)
    chosen = []
    for cat in EMOJI_CATEGORIES:
        cands = sorted((e for e in entries if e["category"] == cat and e.get("has_img_google")
                        and not e.get("skin_variations")
                        and os.path.exists(os.path.join(src, "img/google/64", e["image"]))),
                       key=lambda e: e["sort_order"])
        chosen += cands[:EMOJI_PER_CATEGORY]
    chosen.sort(key=lambda e: e["sort_order"])
    img_out = os.path.join(out, "img/google/64")
    os.makedirs(img_out, exist_ok=True)
    for e in chosen:
        shutil.copyfile(os.path.join(src, "img/google/64", e["image"]), os.path.join(img_out, e["image"]))
    with open(os.path.join(out, "emoji.json"), "w") as f:
        json.dump(chosen, f, separators=(",", ":"), ensure_ascii=False)  # same minified schema as the package
    return chosen


def images(train_imgs, train_labels, out):
    rows = []
    for cls, label in IMAGE_CLASSES.items():
        d = os.path.join(out, cls)
        os.makedirs(d, exist_ok=True)
        idxs = [int(i) for i in np.flatnonzero(train_labels == label)[:IMAGES_PER_CLASS]]
        for k, i in enumerate(idxs):
            a = np.pad(train_imgs[i], 2)  # 28x28 -> 32x32, black border
            Image.fromarray(np.stack([a] * 3, axis=-1), "RGB").save(os.path.join(d, f"{k}.png"), optimize=True)
            rows.append((cls, f"{k}.png", i))
    with open(os.path.join(out, "bag", "corrupt.png"), "wb") as f:
        f.write(CORRUPT)
    return rows


def readme(out, chosen, rows, train_labels):
    counts = np.bincount(train_labels, minlength=10)
    emoji_lines = "\n".join(f"| `img/google/64/{e['image']}` | {e['short_name']} | {e['category']} | {e['subcategory']} |"
                            for e in chosen)
    image_lines = "\n".join(f"| `images/{c}/{n}` | Fashion-MNIST train #{i} |" for c, n, i in rows)
    text = f"""# Test fixtures (small, real data)

Regenerate with `scripts/fetch-assets` then
`$EOSTOK_ASSETS/venv/bin/python scripts/assets/make-fixtures.py $EOSTOK_ASSETS tests/fixtures`
(deterministic: the same cache gives byte-identical files). Total size is kept under 1 MB.

## `fashion-mnist/`: Fashion-MNIST slices, gzipped IDX

| file | content |
|---|---|
| `train-images-idx3-ubyte.gz` | first {N_TRAIN} images of the train split, IDX magic 2051, dims {N_TRAIN}x28x28, u8 |
| `train-labels-idx1-ubyte.gz` | their labels, IDX magic 2049, dim {N_TRAIN}, u8 0..9 |
| `t10k-images-idx3-ubyte.gz` | first {N_TEST} images of the test split, dims {N_TEST}x28x28 |
| `t10k-labels-idx1-ubyte.gz` | their labels, dim {N_TEST} |

Same names and format as the full files in `$EOSTOK_ASSETS/fashion-mnist/`; only the
counts in the headers differ. Labels: 0 t-shirt/top, 1 trouser, 2 pullover, 3 dress,
4 coat, 5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot. Train-slice class counts:
{", ".join(f"{FASHION_CLASSES[i]} {int(c)}" for i, c in enumerate(counts))}.
Source: Debian package `dataset-fashion-mnist` 0.0~git20200523.55506a9-1,
`usr/share/datasets/fashion-mnist/`. Licence: MIT (Expat), (c) 2017 Zalando SE.

## `emoji/`: {len(chosen)} Noto Color Emoji, 64x64 RGBA PNG, {len(EMOJI_CATEGORIES)} categories

`emoji.json` is the package's `emoji.json` (same schema, same minified form) trimmed to
these entries; the image of an entry is `img/google/64/<entry.image>` and its class is
`entry.category`, exactly as in `$EOSTOK_ASSETS/emoji/`, so one loader reads both.
Entries were chosen as the first {EMOJI_PER_CATEGORY} by `sort_order` in each category that have a Google
image and no skin-tone variations.

| file | short_name | category | subcategory |
|---|---|---|---|
{emoji_lines}

Source: npm `emoji-datasource-google` 16.0.0. Licence: package MIT; the Noto emoji
images are Apache-2.0.

## `images/`: tiny ImageFolder for loader tests

`images/<class>/<n>.png`, classes (sorted) `bag`, `sneaker`, `trouser`, {IMAGES_PER_CLASS} images each,
RGB 8-bit 32x32: a Fashion-MNIST train image (from the fixture above) zero-padded by 2 px
on every side, grey replicated to 3 channels.

| file | made from |
|---|---|
{image_lines}
| `images/bag/corrupt.png` | deliberately corrupt: the 8-byte PNG signature followed by a truncated, garbage IHDR ({len(CORRUPT)} bytes). A loader must report or skip it, not panic |

Licence: as Fashion-MNIST (MIT).
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def main():
    assets, out = sys.argv[1], sys.argv[2]
    for sub in ("fashion-mnist", "emoji", "images"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    imgs, labels = fashion(assets, os.path.join(out, "fashion-mnist"))
    chosen = emoji(assets, os.path.join(out, "emoji"))
    rows = images(imgs, labels, os.path.join(out, "images"))
    readme(out, chosen, rows, labels)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
    print(f"fixtures: {total / 1024:.1f} KiB in {out}")
    if total >= 1 << 20:
        raise SystemExit("fixtures exceed 1 MiB")


if __name__ == "__main__":
    main()
