//! Fully connected layer on the CPU as a candle custom op: `y = x·Wᵀ + b`,
//! optionally followed by a fused ReLU. Work is split over rows of the batch
//! (forward, input gradient) and over output features (weight gradient), so
//! every value is summed in the same order whatever the thread count.

use super::cpu::{self, Mat};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows of the batch (or output features) per parallel task.
const ROWS_PER_TASK: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct Linear {
    pub relu: bool,
    /// bf16 products (`training.precision`): the input and weights come
    /// rounded to bf16 (`ops::linear_in`) and the output gradient is
    /// rounded here, before the f32 products (whose sums then hold the bf16
    /// products exactly).
    pub bf16: bool,
}

impl Linear {
    fn dims(x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
        let (n, i) = x.shape().dims2()?;
        let (o, wi) = w.shape().dims2()?;
        if i != wi {
            candle_core::bail!("linear: input has {i} features but the weight expects {wi}");
        }
        Ok((n, i, o))
    }

    fn forward(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        b: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, i, o) = Self::dims(xl, wl)?;
        let _t = crate::profile::scope(|| format!("linear {i}→{o} forward"));
        // (In bf16 the input and weights come rounded: `ops::linear_in`.)
        let mut y = cpu::uninit(n * o);
        if o > 0 {
            y.par_chunks_mut(ROWS_PER_TASK * o)
                .enumerate()
                .for_each(|(t, ys)| {
                    let rows = ys.len() / o;
                    let xs = &x[t * ROWS_PER_TASK * i..];
                    if let Some(b) = b {
                        for row in ys.chunks_mut(o) {
                            row.copy_from_slice(b);
                        }
                    }
                    // y (rows×o) [+]= x (rows×i) · Wᵀ (i×o)
                    // SAFETY: `ys` is this task's rows×o block of y; its `rows`
                    // rows of x start at t·ROWS_PER_TASK·i, inside x's n×i; W is
                    // o×i read transposed. y is a fresh buffer apart from both.
                    unsafe {
                        cpu::gemm(
                            rows,
                            o,
                            i,
                            Mat {
                                ptr: ys.as_mut_ptr(),
                                rs: o as isize,
                                cs: 1,
                            },
                            b.is_some(),
                            Mat {
                                ptr: xs.as_ptr(),
                                rs: i as isize,
                                cs: 1,
                            },
                            Mat {
                                ptr: w.as_ptr(),
                                rs: 1,
                                cs: i as isize,
                            },
                        );
                    }
                    if self.relu {
                        for v in ys.iter_mut() {
                            *v = v.max(0.0);
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    /// Gradients for the input (if `need_dx`), the weight and the bias.
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        y: &Tensor,
        dy: &Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let (n, i, o) = Self::dims(x.layout(), w.layout())?;
        let _t = crate::profile::scope(|| format!("linear {i}→{o} backward"));
        let mut dz = cpu::to_vec(dy)?;
        if self.relu {
            cpu::with_slice(y, |ys| {
                for (g, &v) in dz.iter_mut().zip(ys) {
                    if v <= 0.0 {
                        *g = 0.0;
                    }
                }
                Ok(())
            })?;
        }
        if self.bf16 {
            dz = super::bf16::round_vec(&dz);
        }
        let mut db = vec![0f32; o];
        for row in dz.chunks(o.max(1)) {
            cpu::add_assign(&mut db, row);
        }
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        let (dx, dw) = cpu::with_slice(&x, |xs| {
            cpu::with_slice(&w, |ws| {
                // dW (o×i) = dZᵀ (o×n) · x (n×i), split over output features.
                // Written whole by the gemm below (or zero when the batch is empty).
                let mut dw = if n == 0 {
                    vec![0f32; o * i]
                } else {
                    cpu::uninit(o * i)
                };
                if i > 0 {
                    dw.par_chunks_mut(ROWS_PER_TASK * i)
                        .enumerate()
                        .for_each(|(t, block)| {
                            let rows = block.len() / i;
                            // SAFETY: `block` is rows×i of dW (output features
                            // t·ROWS_PER_TASK on); dZ's n×o read transposed from
                            // column t·ROWS_PER_TASK, `rows` columns of its o;
                            // x is n×i. dW is fresh, apart from both.
                            unsafe {
                                cpu::gemm(
                                    rows,
                                    i,
                                    n,
                                    Mat {
                                        ptr: block.as_mut_ptr(),
                                        rs: i as isize,
                                        cs: 1,
                                    },
                                    false,
                                    Mat {
                                        ptr: dz[t * ROWS_PER_TASK..].as_ptr(),
                                        rs: 1,
                                        cs: o as isize,
                                    },
                                    Mat {
                                        ptr: xs.as_ptr(),
                                        rs: i as isize,
                                        cs: 1,
                                    },
                                );
                            }
                        });
                }
                // dx (n×i) = dZ (n×o) · W (o×i), split over rows of the batch.
                let dx = if need_dx && i > 0 {
                    let mut dx = cpu::uninit(n * i);
                    dx.par_chunks_mut(ROWS_PER_TASK * i)
                        .enumerate()
                        .for_each(|(t, block)| {
                            let rows = block.len() / i;
                            // SAFETY: `block` is rows×i of dx (batch rows
                            // t·ROWS_PER_TASK on); those rows of dZ (n×o) and W
                            // (o×i) are read. dx is fresh, apart from both.
                            unsafe {
                                cpu::gemm(
                                    rows,
                                    i,
                                    o,
                                    Mat {
                                        ptr: block.as_mut_ptr(),
                                        rs: i as isize,
                                        cs: 1,
                                    },
                                    false,
                                    Mat {
                                        ptr: dz[t * ROWS_PER_TASK * o..].as_ptr(),
                                        rs: o as isize,
                                        cs: 1,
                                    },
                                    Mat {
                                        ptr: ws.as_ptr(),
                                        rs: i as isize,
                                        cs: 1,
                                    },
                                );
                            }
                        });
                    Some(dx)
                } else if need_dx {
                    Some(vec![])
                } else {
                    None
                };
                Ok((dx, dw))
            })
        })?;
        let dx = match dx {
            Some(v) => Some(Tensor::from_vec(v, (n, i), x.device())?),
            None => None,
        };
        Ok((
            dx,
            Tensor::from_vec(dw, (o, i), w.device())?,
            Tensor::from_vec(db, o, w.device())?,
        ))
    }
}

/// `(x, weight)`.
pub struct LinearNoBias(pub Linear);

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "cnn-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0
            .forward(cpu::slice(s1, l1)?, l1, cpu::slice(s2, l2)?, l2, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.0.backward(x, w, res, grad, x.track_op())?;
        Ok((dx, Some(dw)))
    }
}

/// `(x, weight, bias)`.
pub struct LinearBias(pub Linear);

impl CustomOp3 for LinearBias {
    fn name(&self) -> &'static str {
        "cnn-linear-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.0.forward(
            cpu::slice(s1, l1)?,
            l1,
            cpu::slice(s2, l2)?,
            l2,
            Some(cpu::slice(s3, l3)?),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.0.backward(x, w, res, grad, x.track_op())?;
        Ok((dx, Some(dw), Some(db)))
    }
}
