//! The promotion gate: `--promote-if "f1_min>=0.75,accuracy>=0.9"` — conditions on the new
//! version's metrics that must all hold before it becomes the champion.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One condition: `metric >= value` or `metric <= value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// A metric name as logged: `f1_min`, `eval.accuracy`, `f1.<label>`, …
    pub metric: String,
    /// `>=` when true, `<=` when false.
    pub at_least: bool,
    /// The threshold.
    pub value: f64,
}

/// All conditions of a `--promote-if`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gate {
    /// Every one must hold.
    pub conditions: Vec<Condition>,
}

impl FromStr for Gate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut conditions = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (metric, at_least, value) = if let Some((m, v)) = part.split_once(">=") {
                (m, true, v)
            } else if let Some((m, v)) = part.split_once("<=") {
                (m, false, v)
            } else {
                return Err(format!(
                    "condition {part:?} has no >= or <= (write e.g. \"f1_min>=0.75\")"
                ));
            };
            let metric = metric.trim();
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("condition {part:?}: {:?} is not a number", value.trim()))?;
            if metric.is_empty() {
                return Err(format!("condition {part:?} names no metric"));
            }
            conditions.push(Condition {
                metric: metric.to_string(),
                at_least,
                value,
            });
        }
        if conditions.is_empty() {
            return Err("no condition given (write e.g. \"f1_min>=0.75\")".into());
        }
        Ok(Gate { conditions })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.at_least { ">=" } else { "<=" };
        write!(f, "{}{op}{}", self.metric, self.value)
    }
}

/// Whether one condition held, said with the number behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The condition.
    pub condition: Condition,
    /// The metric's value.
    pub actual: f64,
    /// Whether it held.
    pub passed: bool,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.condition;
        let op = match (c.at_least, self.passed) {
            (true, true) => ">=",
            (true, false) => "<",
            (false, true) => "<=",
            (false, false) => ">",
        };
        write!(f, "{} {:.4} {op} {}", c.metric, self.actual, c.value)
    }
}

impl Gate {
    /// Check every condition against `metrics`; a metric that is not there is an error naming
    /// those that are.
    pub fn check(&self, metrics: &BTreeMap<String, f64>) -> Result<Vec<Check>> {
        self.conditions
            .iter()
            .map(|c| {
                let actual = *metrics.get(&c.metric).ok_or_else(|| {
                    let known: Vec<&str> = metrics.keys().map(String::as_str).collect();
                    Error::Usage(format!(
                        "`promote_if` names metric {:?}, which this run did not measure (metrics: {})",
                        c.metric,
                        known.join(", ")
                    ))
                })?;
                let passed = if c.at_least {
                    actual >= c.value
                } else {
                    actual <= c.value
                };
                Ok(Check {
                    condition: c.clone(),
                    actual,
                    passed,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_check() {
        let gate: Gate = "f1_min>=0.75, eval.accuracy <= 0.99".parse().unwrap();
        assert_eq!(gate.conditions.len(), 2);
        let metrics = BTreeMap::from([
            ("f1_min".to_string(), 0.8),
            ("eval.accuracy".to_string(), 0.995),
        ]);
        let checks = gate.check(&metrics).unwrap();
        assert_eq!(checks[0].to_string(), "f1_min 0.8000 >= 0.75");
        assert!(checks[0].passed && !checks[1].passed);
        assert_eq!(checks[1].to_string(), "eval.accuracy 0.9950 > 0.99");
        assert_eq!(
            "f1_min>0.7".parse::<Gate>().unwrap_err(),
            "condition \"f1_min>0.7\" has no >= or <= (write e.g. \"f1_min>=0.75\")"
        );
        assert_eq!(
            "f1_min>=x".parse::<Gate>().unwrap_err(),
            "condition \"f1_min>=x\": \"x\" is not a number"
        );
        let err = "f2>=1"
            .parse::<Gate>()
            .unwrap()
            .check(&metrics)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`promote_if` names metric \"f2\", which this run did not measure (metrics: eval.accuracy, f1_min)"
        );
    }
}
