//! The system-wide channel policy, deny by default: a domain may open a channel to another
//! only if a rule names both ends and the channel, and then only with at most the rule's
//! buffer. Nothing else can grant a channel.

use std::collections::HashMap;

/// One `[[allow]]` of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub from: String,
    pub to: String,
    pub channel: String,
    /// Bytes of the channel's fixed buffer (per direction).
    pub buffer: u64,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with this buffer size.
    Allow { buffer: u64 },
    /// Denied, and why (one line).
    Deny(String),
}

/// The rules, indexed by (from, to, channel).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: HashMap<(String, String, String), u64>,
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Self {
        Policy {
            rules: rules
                .into_iter()
                .map(|r| ((r.from, r.to, r.channel), r.buffer))
                .collect(),
        }
    }

    /// May `from` open `channel` to `to`, with `buffer` bytes (`None`: the rule's size)?
    pub fn check(&self, from: &str, to: &str, channel: &str, buffer: Option<u64>) -> Decision {
        let Some(&max) = self
            .rules
            .get(&(from.to_string(), to.to_string(), channel.to_string()))
        else {
            return Decision::Deny(format!(
                "policy: {from} may not open channel {channel:?} to {to}"
            ));
        };
        match buffer {
            None => Decision::Allow { buffer: max },
            Some(b) if b > max => {
                Decision::Deny(format!("policy: channel {channel:?} from {from} to {to} allows at most {max} bytes, {b} asked"))
            }
            Some(b) if b == 0 || !b.is_power_of_two() => Decision::Deny(format!("policy: buffer {b} is not a power of two")),
            Some(b) => Decision::Allow { buffer: b },
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(vec![Rule {
            from: "common".into(),
            to: "trusted".into(),
            channel: "msg".into(),
            buffer: 65536,
        }])
    }

    #[test]
    fn deny_by_default() {
        let p = policy();
        assert_eq!(
            p.check("common", "trusted", "msg", None),
            Decision::Allow { buffer: 65536 }
        );
        assert_eq!(
            p.check("common", "trusted", "msg", Some(4096)),
            Decision::Allow { buffer: 4096 }
        );
        // The reverse direction, another channel, another domain: all denied.
        for (f, t, c) in [
            ("trusted", "common", "msg"),
            ("common", "trusted", "other"),
            ("modem", "trusted", "msg"),
        ] {
            assert!(
                matches!(p.check(f, t, c, None), Decision::Deny(_)),
                "{f}->{t} {c}"
            );
        }
        assert!(matches!(
            p.check("common", "trusted", "msg", Some(1 << 20)),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.check("common", "trusted", "msg", Some(5000)),
            Decision::Deny(_)
        ));
        assert!(Policy::default().is_empty());
    }
}
