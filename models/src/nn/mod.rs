//! candle modules of the EOSTok architecture (feature `candle`).

pub mod ar;
pub mod decoder;
pub mod encoder;
pub mod fused;
pub mod ibq;
pub mod image;
pub mod layers;
pub mod model;
pub mod params;
pub mod sample;

pub use ar::{ArTransformer, KvCache};
pub use decoder::{Decoder, DecoderOut};
pub use encoder::{Encoder, EncoderOut};
pub use ibq::{Ibq, IbqOut};
pub use model::Eostok;
pub use params::ParamStore;
pub use sample::{sample_tokens, GenerateOptions, SampleTrace};
