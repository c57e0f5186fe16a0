//! Flag groups several commands share, and the value enums clap parses,
//! each mapped onto the library type it stands for (the library knows
//! nothing of clap).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use imgsearch::classify::{ClassifyOptions, DEFAULT_K};
use imgsearch::filter::Filter;
use imgsearch::imageio::{DecodeLimits, DEFAULT_MAX_MEGAPIXELS};
use imgsearch::index::{DEFAULT_INDEX, INDEX_ENV};
use imgsearch::knn::Weighting;

/// `--index`: which index folder.
#[derive(Args)]
pub struct IndexArg {
    /// Index folder (created by the first ingest).
    #[arg(long, env = INDEX_ENV, default_value = DEFAULT_INDEX)]
    pub index: PathBuf,
}

/// `--index` and `--json`: all that commands which only read or tidy an
/// index take.
#[derive(Args)]
pub struct IndexOnly {
    #[command(flatten)]
    pub index: IndexArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--max-megapixels` and `--allow-truncated`: what the decoder refuses.
#[derive(Args)]
pub struct DecodeArgs {
    /// Refuse images larger than this many megapixels (decompression bombs).
    #[arg(long, default_value_t = DEFAULT_MAX_MEGAPIXELS)]
    pub max_megapixels: f64,
    /// Keep truncated images (a half-copied file, a failed download) with
    /// their missing part grey, instead of reporting them as failures.
    /// Corrupt data is still refused.
    #[arg(long)]
    pub allow_truncated: bool,
}

impl DecodeArgs {
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_megapixels: self.max_megapixels,
            allow_truncated: self.allow_truncated,
        }
    }
}

/// `--under` and `--label`: which indexed images a command looks at.
#[derive(Args)]
pub struct FilterArgs {
    /// Only images under this folder.
    #[arg(long)]
    pub under: Option<PathBuf>,
    /// Only images with this label.
    #[arg(long)]
    pub label: Option<String>,
}

impl FilterArgs {
    pub fn filter(&self) -> Filter {
        Filter {
            under: self.under.clone(),
            label: self.label.clone(),
            labelled: false,
        }
    }
}

/// How the neighbours vote (classify and eval).
#[derive(Args)]
pub struct VoteArgs {
    /// Labelled neighbours that vote.
    #[arg(short, long, default_value_t = DEFAULT_K)]
    pub k: usize,
    /// Weight each vote by 1 / distance instead of one vote per neighbour.
    #[arg(long)]
    pub weighted: bool,
}

impl VoteArgs {
    pub fn options(&self) -> ClassifyOptions {
        ClassifyOptions {
            k: self.k,
            weighting: if self.weighted {
                Weighting::InverseDistance
            } else {
                Weighting::Majority
            },
            ..Default::default()
        }
    }
}

/// Declares a clap value enum beside the library enum it stands for, with
/// the conversion; variant names (and so the values users type) match.
macro_rules! value_enum {
    ($(#[$meta:meta])* $name:ident => $lib:ty { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl From<$name> for $lib {
            fn from(value: $name) -> Self {
                match value {
                    $($name::$variant => Self::$variant),+
                }
            }
        }
    };
}

value_enum! {
    /// Reconstruction loss.
    LossArg => imgsearch::model::Loss {
        /// Binary cross-entropy on logits (pixels read as probabilities).
        Bce,
        /// Mean squared error on sigmoid outputs.
        Mse,
    }
}

value_enum! {
    /// Input normalization, recorded in the model file.
    NormalizationArg => imgsearch::model::Normalization {
        /// pixel / 255.
        Unit,
        /// pixel / 255, scaled to a fixed mean brightness.
        Gain,
    }
}

value_enum! {
    /// How an image that is not square becomes the model's square input.
    PrepArg => imgsearch::prepare::Prep {
        /// Stretch to a square (aspect ratio lost).
        Squash,
        /// The largest centred square (edges of wide or tall images cut off).
        Crop,
        /// The whole image, fitted and centred on grey bars.
        Letterbox,
    }
}

value_enum! {
    /// How an image that is not the model's size meets it.
    FitArg => imgsearch::restore::Fit {
        /// Overlapping model-sized windows at full resolution, blended.
        Tiles,
        /// The whole image to the model's size and back.
        Resize,
    }
}

value_enum! {
    /// How several models' errors combine.
    CombineArg => imgsearch::anomaly::Combine {
        /// Average: steadies the ranking.
        Mean,
        /// Largest: flags what any one model finds odd.
        Max,
    }
}

value_enum! {
    /// Latent export format.
    FormatArg => imgsearch::export::Format {
        /// id,path,label,recon_error,z0.. per row.
        Csv,
        /// One JSON object per image.
        Jsonl,
        /// A float32 matrix (row names in FILE.rows.csv).
        Npy,
        /// The Parquet shard schema (`embed --out`): `import` reads it back,
        /// and pandas, polars, DuckDB and Spark read it as it is.
        Parquet,
    }
}

value_enum! {
    /// A standard dataset.
    DatasetArg => imgsearch::dataset::DatasetName {
        Mnist,
        FashionMnist,
        Cifar10,
    }
}

value_enum! {
    /// A dataset split.
    SplitArg => imgsearch::dataset::Split {
        Train,
        Test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_enums_keep_the_names_users_type() {
        let names = |values: &[&dyn Fn() -> Option<clap::builder::PossibleValue>]| {
            values
                .iter()
                .map(|v| v().unwrap().get_name().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&[&|| DatasetArg::FashionMnist.to_possible_value(), &|| {
                DatasetArg::Cifar10.to_possible_value()
            }]),
            ["fashion-mnist", "cifar10"]
        );
        assert_eq!(
            imgsearch::restore::Fit::from(FitArg::Resize),
            imgsearch::restore::Fit::Resize
        );
    }
}

value_enum! {
    /// Where k-means runs.
    SpaceArg => imgsearch::clusters::Space {
        /// The embedding as stored.
        Embedding,
        /// An 8-D layout that keeps each image's nearest neighbours near.
        Neighbours,
    }
}

value_enum! {
    /// How a map lays the images out on the plane.
    MethodArg => imgsearch::map::Method {
        /// The two leading principal axes.
        Pca,
        /// Neighbours kept near (UMAP-style).
        Neighbours,
    }
}
