//! Feature networks for the Fréchet distance, precision/recall and the
//! IS-like score. Every net takes images `[B,3,S,S]` in [-1, 1] (grey
//! already replicated to 3 channels by the loaders) and resizes them to its
//! own input with torch-style bicubic interpolation.
//!
//! | `--features` | features | logits (IS) | input |
//! |---|---|---|---|
//! | `effnet-lite0` | 1280-d global average pool after the head conv (the penultimate layer) | ImageNet-1k | 224², `(u8 - 127) / 128` |
//! | `dinov2` | 384-d CLS token after the final LayerNorm | none | 224² (16x16 patches of 14), ImageNet mean/std |
//! | `inception` | 2048-d pool3 of pytorch-fid's FID Inception-v3 (user-supplied weights, see trainer/README.md) | 1008 classes | 299², bilinear |
//!
//! Only `inception` with pytorch-fid's weights gives FID's features; the
//! distances are named after the net (`FD_effnet-lite0`, `FD_dinov2`,
//! `FD_inception`), and the report says FID only for the last.

use anyhow::Result;
use candle_core::{Device, Tensor};
use eostok_models::exit::bad_input;
use eostok_models::nets::dinov2::{normalize_imagenet, Dinov2};
use eostok_models::nets::ops::resize_bicubic;
use eostok_models::nets::{EfficientNetLite0, InceptionV3};
use std::path::PathBuf;

/// Input side of DINOv2 here: 16 x 16 patches of 14 px.
pub const DINOV2_INPUT: usize = 224;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FeatureNet {
    EffnetLite0,
    Dinov2,
    Inception,
}

impl FeatureNet {
    pub const ALL: [FeatureNet; 3] = [FeatureNet::EffnetLite0, FeatureNet::Dinov2, FeatureNet::Inception];

    /// The name used on the command line, in output keys and metric names.
    pub fn name(self) -> &'static str {
        match self {
            FeatureNet::EffnetLite0 => "effnet-lite0",
            FeatureNet::Dinov2 => "dinov2",
            FeatureNet::Inception => "inception",
        }
    }

    pub fn parse(s: &str) -> Result<FeatureNet> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "effnet-lite0" | "effnet" | "efficientnet-lite0" => Ok(FeatureNet::EffnetLite0),
            "dinov2" | "dinov2-s" => Ok(FeatureNet::Dinov2),
            "inception" | "inception-v3" => Ok(FeatureNet::Inception),
            _ => Err(bad_input(format!("--features {s}: unknown feature net (effnet-lite0, dinov2, inception)"))),
        }
    }

    /// A comma-separated list, order kept, duplicates dropped.
    pub fn parse_list(s: &str) -> Result<Vec<FeatureNet>> {
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let f = Self::parse(part)?;
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if out.is_empty() {
            return Err(bad_input("--features: no feature net given"));
        }
        Ok(out)
    }

    /// Feature width.
    pub fn dim(self) -> usize {
        match self {
            FeatureNet::EffnetLite0 => eostok_models::nets::effnet::FEATURES,
            FeatureNet::Dinov2 => 384,
            FeatureNet::Inception => 2048,
        }
    }

    /// Which activations are the features (for reports).
    pub fn layer(self) -> &'static str {
        match self {
            FeatureNet::EffnetLite0 => "global average pool after the head conv (1280-d, penultimate)",
            FeatureNet::Dinov2 => "CLS token after the final LayerNorm (384-d)",
            FeatureNet::Inception => "pool3 (2048-d)",
        }
    }

    /// Whether the net has classifier logits (for the IS-like score).
    pub fn has_logits(self) -> bool {
        matches!(self, FeatureNet::EffnetLite0 | FeatureNet::Inception)
    }

    /// The Fréchet distance's printed name.
    pub fn fd_name(self) -> String {
        format!("FD_{}", self.name())
    }
}

/// The weight file that is part of a cached statistic's key for `net` (see
/// `cache::CacheKey::weights`): the file given by flag, else Inception's user-supplied
/// file in the asset cache; none for the cache's own EfficientNet/DINOv2 files.
pub fn keyed_weights(net: FeatureNet, given: Option<&PathBuf>) -> Option<PathBuf> {
    match (given, net) {
        (Some(p), _) => Some(p.clone()),
        (None, FeatureNet::Inception) => Some(eostok_models::nets::asset_dir().join(eostok_models::nets::inception::INCEPTION_FILE)),
        (None, _) => None,
    }
}

/// A loaded feature net.
pub enum Extractor {
    Effnet(Box<EfficientNetLite0>),
    Dinov2(Box<Dinov2>),
    Inception(Box<InceptionV3>),
}

/// Features (`[B, dim]` row-major) and, for classifiers, logits of a batch.
pub struct BatchFeatures {
    pub features: Vec<f32>,
    pub logits: Option<Vec<f32>>,
}

impl Extractor {
    /// Load `net` from the asset cache (or `weights` when given).
    pub fn load(net: FeatureNet, weights: Option<&PathBuf>, device: &Device) -> Result<Extractor> {
        match net {
            FeatureNet::EffnetLite0 => Ok(Extractor::Effnet(Box::new(match weights {
                Some(p) => EfficientNetLite0::load(p, device)?,
                None => EfficientNetLite0::load_default(device)?,
            }))),
            FeatureNet::Dinov2 => Ok(Extractor::Dinov2(Box::new(match weights {
                Some(p) => Dinov2::load(p, device)?,
                None => Dinov2::load_default(device)?,
            }))),
            FeatureNet::Inception => Ok(Extractor::Inception(Box::new(match weights {
                Some(p) => InceptionV3::load(p, device)?,
                None => InceptionV3::load_default(device)?,
            }))),
        }
    }

    pub fn net(&self) -> FeatureNet {
        match self {
            Extractor::Effnet(_) => FeatureNet::EffnetLite0,
            Extractor::Dinov2(_) => FeatureNet::Dinov2,
            Extractor::Inception(_) => FeatureNet::Inception,
        }
    }

    /// `images` `[B,3,S,S]` in [-1, 1].
    pub fn run(&self, images: &Tensor) -> Result<BatchFeatures> {
        match self {
            Extractor::Effnet(net) => {
                let (f, l) = net.forward_pm1(images)?;
                Ok(BatchFeatures { features: f.flatten_all()?.to_vec1()?, logits: Some(l.flatten_all()?.to_vec1()?) })
            }
            Extractor::Dinov2(net) => {
                let x = resize_bicubic(images, DINOV2_INPUT, DINOV2_INPUT)?;
                let tokens = net.forward(&normalize_imagenet(&x)?)?;
                let cls = tokens.narrow(1, 0, 1)?.squeeze(1)?;
                Ok(BatchFeatures { features: cls.flatten_all()?.to_vec1()?, logits: None })
            }
            Extractor::Inception(net) => {
                let (f, l) = net.forward_pm1(images)?;
                let logits = l.map(|l| l.flatten_all()?.to_vec1()).transpose()?;
                Ok(BatchFeatures { features: f.flatten_all()?.to_vec1()?, logits })
            }
        }
    }
}

/// Features and logits of a whole image set, accumulated batch by batch.
#[derive(Debug, Clone, Default)]
pub struct FeatureSet {
    pub features: Vec<f32>,
    pub logits: Vec<f32>,
    pub count: usize,
}

impl FeatureSet {
    pub fn push(&mut self, b: BatchFeatures, rows: usize) {
        self.features.extend(b.features);
        if let Some(l) = b.logits {
            self.logits.extend(l);
        }
        self.count += rows;
    }
}
