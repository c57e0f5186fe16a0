//! The convolutional autoencoder.
//!
//! Encoder: stride-2 3×3 convolutions with ReLU halve the image per block down
//! to a small grid, then a linear layer maps the flattened grid to the latent.
//! Decoder: the mirror, a linear layer back to the grid, then stride-2 4×4
//! transposed convolutions (k4/s2/p1 doubles the size exactly, so no
//! `output_padding` is needed) ending in logits; `sigmoid` gives pixels.
//! At inference each transposed convolution runs as one ordinary convolution ([`Deconv`]),
//! which candle does with a matrix multiply; its own transposed kernel on
//! the CPU is a plain loop, 4× slower than the whole encoder.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Shape of an autoencoder. Everything needed to rebuild the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchConfig {
    /// Side of the square input, in pixels (e.g. 28, 32, 64).
    pub input_size: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Length of the latent vector (8 to 128).
    pub latent: usize,
    /// Output channels of each encoder block; the decoder mirrors them.
    pub widths: Vec<usize>,
}

impl ArchConfig {
    /// A sensible shape for an input size: two blocks for 28 (→7×7),
    /// three for 32 (→4×4), four for 64 (→4×4).
    pub fn for_input(input_size: usize, channels: usize, latent: usize) -> Self {
        let widths = match input_size {
            s if s % 8 == 0 && s / 8 >= 4 && s <= 32 => vec![32, 64, 128],
            s if s % 16 == 0 && s / 16 >= 4 => vec![32, 64, 128, 256],
            _ => vec![32, 64],
        };
        Self {
            input_size,
            channels,
            latent,
            widths,
        }
    }

    /// Side of the encoder's last feature map.
    pub fn grid(&self) -> usize {
        self.input_size >> self.widths.len()
    }

    /// Checks that the shape can be built, with a message a person can act on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !matches!(self.channels, 1 | 3) {
            return Err(format!("channels must be 1 or 3, not {}", self.channels));
        }
        if !(2..=1024).contains(&self.latent) {
            return Err(format!(
                "latent must be between 2 and 1024, not {}",
                self.latent
            ));
        }
        if self.widths.is_empty() || self.widths.iter().any(|&w| w == 0 || w > 1024) {
            return Err(format!(
                "widths must be 1 to 1024 each, got {:?}",
                self.widths
            ));
        }
        let blocks = self.widths.len();
        if self.input_size == 0 || self.input_size % (1 << blocks) != 0 || self.grid() < 2 {
            return Err(format!(
                "input size {} cannot be halved {blocks} times down to a grid of at least 2",
                self.input_size
            ));
        }
        Ok(())
    }
}

/// Image → latent. Layers are held by type, not as `candle_nn::Sequential`
/// (boxed `dyn Module`, neither `Send` nor `Sync`), so one loaded model can
/// serve many threads.
pub struct Encoder {
    convs: Vec<Conv2d>,
    to_latent: Linear,
}

impl Encoder {
    pub fn new(cfg: &ArchConfig, vb: VarBuilder) -> Result<Self> {
        let conv = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let mut convs = Vec::with_capacity(cfg.widths.len());
        let mut in_c = cfg.channels;
        for (i, &out_c) in cfg.widths.iter().enumerate() {
            convs.push(candle_nn::conv2d(
                in_c,
                out_c,
                3,
                conv,
                vb.pp(format!("conv{i}")),
            )?);
            in_c = out_c;
        }
        let flat = in_c * cfg.grid() * cfg.grid();
        let to_latent = candle_nn::linear(flat, cfg.latent, vb.pp("to_latent"))?;
        Ok(Self { convs, to_latent })
    }
}

impl Encoder {
    /// Every block's feature map, first to last (what the embedding head
    /// pools), then the latent computed from the last one.
    pub fn maps_and_latent(&self, xs: &Tensor) -> Result<(Vec<Tensor>, Tensor)> {
        let maps = self.maps(xs)?;
        let last = maps.last().expect("validated: at least one block");
        let latent = last.flatten_from(1)?.apply(&self.to_latent)?;
        Ok((maps, latent))
    }

    /// Every block's feature map, without the latent.
    pub fn maps(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        let mut maps: Vec<Tensor> = Vec::with_capacity(self.convs.len());
        for conv in &self.convs {
            let input = maps.last().unwrap_or(xs);
            maps.push(input.apply(conv)?.relu()?);
        }
        Ok(maps)
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(self.maps_and_latent(xs)?.1)
    }
}

/// Latent → pixel logits.
pub struct Decoder {
    from_latent: Linear,
    /// ReLU between these, none after the last (logits).
    deconvs: Vec<Deconv>,
    grid_shape: (usize, usize, usize),
}

impl Decoder {
    pub fn new(cfg: &ArchConfig, vb: VarBuilder) -> Result<Self> {
        let grid = cfg.grid();
        let top = *cfg.widths.last().expect("validated: widths not empty");
        let from_latent = candle_nn::linear(cfg.latent, top * grid * grid, vb.pp("from_latent"))?;
        let deconv = ConvTranspose2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        // Mirror of the encoder: widths reversed, ending at the image's channels.
        let mut outs: Vec<usize> = cfg.widths.iter().rev().skip(1).copied().collect();
        outs.push(cfg.channels);
        let mut deconvs = Vec::with_capacity(outs.len());
        let mut in_c = top;
        for (i, &out_c) in outs.iter().enumerate() {
            deconvs.push(Deconv::new(candle_nn::conv_transpose2d(
                in_c,
                out_c,
                4,
                deconv,
                vb.pp(format!("deconv{i}")),
            )?));
            in_c = out_c;
        }
        Ok(Self {
            from_latent,
            deconvs,
            grid_shape: (top, grid, grid),
        })
    }
}

impl Module for Decoder {
    fn forward(&self, zs: &Tensor) -> Result<Tensor> {
        let batch = zs.dim(0)?;
        let (c, h, w) = self.grid_shape;
        let grid = zs
            .apply(&self.from_latent)?
            .relu()?
            .reshape((batch, c, h, w))?;
        let (last, hidden) = self.deconvs.split_last().expect("at least one layer");
        hidden
            .iter()
            .try_fold(grid, |x, deconv| x.apply(deconv)?.relu())?
            .apply(last)
    }
}

/// A 4×4, stride-2, padding-1 transposed convolution computed as one 2×2
/// convolution (the "sub-pixel" form), same weights, same result.
///
/// Output row `2m + r` of the transposed convolution only ever meets kernel
/// rows 1 and 3 (for `r = 0`, from input rows `m` and `m − 1`) or 0 and 2
/// (for `r = 1`, from rows `m + 1` and `m`), and likewise for columns. So
/// each of the four output phases is a 2×2 correlation of the input padded
/// by one, with a kernel gathered from the 4×4 one. The four kernels are
/// stacked into one convolution with 4× the output channels; its outputs are
/// cut to each phase's window and interleaved. Everything is a tensor op,
/// so it could be trained through too, but candle's own backward pass for
/// the transposed kernel is the faster one there (about 20% per epoch): a
/// layer whose weight is a training variable keeps candle's kernel.
pub struct Deconv {
    layer: ConvTranspose2d,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Deconv {
    /// Kernel rows (or columns) that feed output phase 0 and phase 1, in the
    /// order the 2×2 correlation meets them.
    const TAPS: [[u32; 2]; 2] = [[3, 1], [2, 0]];

    fn new(layer: ConvTranspose2d) -> Self {
        Self {
            weight: layer.weight().clone(),
            bias: layer.bias().cloned(),
            layer,
        }
    }

    /// The four phase kernels as one `(4·out, in, 2, 2)` convolution
    /// weight, phases in the order (0,0), (0,1), (1,0), (1,1).
    fn phase_kernels(&self) -> Result<Tensor> {
        let device = self.weight.device();
        let mut kernels = Vec::with_capacity(4);
        for rows in Self::TAPS {
            for cols in Self::TAPS {
                let rows = Tensor::new(&rows, device)?;
                let cols = Tensor::new(&cols, device)?;
                // (in, out, 4, 4) → (in, out, 2, 2) → (out, in, 2, 2)
                let k = self.weight.index_select(&rows, 2)?.index_select(&cols, 3)?;
                kernels.push(k.transpose(0, 1)?);
            }
        }
        Tensor::cat(&kernels, 0)?.contiguous()
    }
}

impl Module for Deconv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.weight.is_variable() {
            xs.apply(&self.layer)
        } else {
            self.sub_pixel(xs)
        }
    }
}

impl Deconv {
    /// The transposed convolution as one ordinary convolution.
    fn sub_pixel(&self, xs: &Tensor) -> Result<Tensor> {
        let (batch, _, h, w) = xs.dims4()?;
        let out_c = self.weight.dim(1)?;
        let all = xs.conv2d(&self.phase_kernels()?, 1, 1, 1, 1)?;
        let phase = |p: usize, r: usize, c: usize| {
            all.narrow(1, p * out_c, out_c)?
                .narrow(2, r, h)?
                .narrow(3, c, w)
        };
        // Interleave columns within each row phase, then the rows.
        let row = |r: usize| -> Result<Tensor> {
            Tensor::stack(&[phase(2 * r, r, 0)?, phase(2 * r + 1, r, 1)?], 4)?.reshape((
                batch,
                out_c,
                h,
                2 * w,
            ))
        };
        let out = Tensor::stack(&[row(0)?, row(1)?], 3)?.reshape((batch, out_c, 2 * h, 2 * w))?;
        match &self.bias {
            Some(bias) => out.broadcast_add(&bias.reshape((1, out_c, 1, 1))?),
            None => Ok(out),
        }
    }
}

/// Encoder and decoder together.
pub struct Autoencoder {
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl Autoencoder {
    pub fn new(cfg: &ArchConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
        })
    }

    /// Names of the tensors [`Autoencoder::new`] takes from its
    /// `VarBuilder`, without building anything (a model file's header is
    /// checked against them before its shapes are trusted).
    pub fn tensor_names(cfg: &ArchConfig) -> Vec<String> {
        let blocks = cfg.widths.len();
        let layers = (0..blocks)
            .map(|i| format!("encoder.conv{i}"))
            .chain(["encoder.to_latent".into(), "decoder.from_latent".into()])
            .chain((0..blocks).map(|i| format!("decoder.deconv{i}")));
        layers
            .flat_map(|layer| [format!("{layer}.weight"), format!("{layer}.bias")])
            .collect()
    }

    /// Reconstruction logits (apply `sigmoid` for pixels in `[0, 1]`).
    pub fn forward_logits(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.encoder)?.apply(&self.decoder)
    }

    /// Reconstructed pixels in `[0, 1]`.
    pub fn reconstruct(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::sigmoid(&self.forward_logits(xs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn deconv_matches_the_transposed_convolution() {
        let dev = Device::Cpu;
        for (in_c, out_c, side, bias) in [(3, 5, 4, true), (8, 3, 7, true), (2, 2, 1, false)] {
            let vm = candle_nn::VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let cfg = ConvTranspose2dConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            };
            let layer = if bias {
                candle_nn::conv_transpose2d(in_c, out_c, 4, cfg, vb).unwrap()
            } else {
                candle_nn::conv_transpose2d_no_bias(in_c, out_c, 4, cfg, vb).unwrap()
            };
            let xs = Tensor::randn(0f32, 1.0, (2, in_c, side, side), &dev).unwrap();
            let want = xs.apply(&layer).unwrap();
            let got = Deconv::new(layer).sub_pixel(&xs).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "max difference {diff}");
        }
    }

    #[test]
    fn shapes_round_trip() {
        for (size, channels) in [(28, 1), (32, 3), (64, 3), (16, 1)] {
            let cfg = ArchConfig::for_input(size, channels, 8);
            cfg.validate().unwrap();
            let vm = candle_nn::VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let ae = Autoencoder::new(&cfg, vb).unwrap();
            let x = Tensor::zeros((2, channels, size, size), DType::F32, &Device::Cpu).unwrap();
            assert_eq!(x.apply(&ae.encoder).unwrap().dims(), &[2, 8]);
            assert_eq!(ae.reconstruct(&x).unwrap().dims(), x.dims());
        }
    }

    #[test]
    fn tensor_names_are_the_ones_new_asks_for() {
        for (size, channels) in [(28, 1), (64, 3)] {
            let cfg = ArchConfig::for_input(size, channels, 8);
            let vm = candle_nn::VarMap::new();
            Autoencoder::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
            let mut built: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
            let mut listed = Autoencoder::tensor_names(&cfg);
            built.sort();
            listed.sort();
            assert_eq!(built, listed);
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let mut cfg = ArchConfig::for_input(28, 1, 16);
        cfg.input_size = 30;
        assert!(cfg.validate().unwrap_err().contains("cannot be halved"));
        let cfg = ArchConfig::for_input(28, 2, 16);
        assert!(cfg.validate().is_err());
    }
}
