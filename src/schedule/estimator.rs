//! Smoothed rate estimates.

/// An exponentially weighted moving average: `value = a * sample + (1 - a) * value`,
/// the first sample taken as is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
}

impl Ewma {
    /// An empty average with weight `alpha` (clamped into `(0, 1]`) for new samples.
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha > 0.0 && alpha <= 1.0 {
            alpha
        } else {
            1.0
        };
        Ewma { alpha, value: None }
    }

    /// Adds a sample; non-finite or negative samples are ignored.
    pub fn add(&mut self, sample: f64) {
        if !sample.is_finite() || sample < 0.0 {
            return;
        }
        self.value = Some(match self.value {
            None => sample,
            Some(v) => self.alpha * sample + (1.0 - self.alpha) * v,
        });
    }

    /// The current average, if any sample was added.
    pub fn get(&self) -> Option<f64> {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::Ewma;

    #[test]
    fn first_sample_then_weighted() {
        let mut e = Ewma::new(0.5);
        assert_eq!(e.get(), None);
        e.add(100.0);
        assert_eq!(e.get(), Some(100.0));
        e.add(200.0);
        assert_eq!(e.get(), Some(150.0));
        e.add(f64::NAN);
        e.add(-1.0);
        assert_eq!(e.get(), Some(150.0));
    }
}
