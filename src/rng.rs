//! The project's own seeded random numbers. candle's CPU generator cannot be
//! seeded, so weight initialisation, the validation split, shuffling and
//! dropout all draw from ChaCha8 streams derived from the run's seed: one
//! stream per purpose (and per epoch where it matters), so each can be
//! recreated exactly when a run is resumed.

use rand::SeedableRng;
pub use rand_chacha::ChaCha8Rng as Rng;

/// What a stream is used for; each gets its own independent sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    Init = 1,
    Split = 2,
    Shuffle = 3,
    Dropout = 4,
    Augment = 5,
    /// Images picked for display (`cnn samples`).
    Display = 6,
    /// The alternating flip's start, per image.
    Flip = 7,
    /// Mixup and CutMix, per step.
    Mix = 8,
    /// The class-balanced sampler, per epoch.
    Sample = 9,
    /// The training images patch whitening looks at.
    Whiten = 10,
}

/// The generator for `purpose` and `index` (an epoch, say) under `seed`.
pub fn stream(seed: u64, purpose: Purpose, index: u64) -> Rng {
    let mut rng = Rng::seed_from_u64(seed);
    rng.set_stream(((purpose as u64) << 48) ^ index);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    #[test]
    fn same_seed_same_numbers_and_streams_differ() {
        let a: Vec<u32> = (0..4)
            .map(|_| stream(7, Purpose::Init, 0).random())
            .collect();
        let b: Vec<u32> = (0..4)
            .map(|_| stream(7, Purpose::Init, 0).random())
            .collect();
        assert_eq!(a, b);
        let c: u32 = stream(7, Purpose::Shuffle, 0).random();
        let d: u32 = stream(8, Purpose::Init, 0).random();
        assert_ne!(a[0], c);
        assert_ne!(a[0], d);
    }
}
