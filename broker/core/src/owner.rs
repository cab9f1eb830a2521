//! Which cluster member sequences a topic: rendezvous (highest random
//! weight) hashing over the live members, so a change of membership moves
//! only the topics of the member that left or arrived.

/// Rendezvous score of `(node, topic)`: FNV-1a over both (separated by a
/// byte no name contains), then a 64-bit finalizer so that names differing
/// in one character still spread evenly.
pub fn score(node: &str, topic: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(topic.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The member that sequences `topic`: the highest score (ties, which need
/// equal 64-bit hashes, go to the greater name).
pub fn owner<'a, I>(members: I, topic: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    members.into_iter().max_by_key(|m| (score(m, topic), *m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of three members owns a third of many topics, whatever the
    /// naming of nodes and topics.
    #[test]
    fn topics_spread_evenly() {
        for nodes in [["n1", "n2", "n3"], ["herald-0", "herald-1", "herald-2"]] {
            for prefix in ["t.", "orders.eu.", "x"] {
                let mut owned = [0usize; 3];
                const N: usize = 30_000;
                for i in 0..N {
                    let topic = format!("{prefix}{i}");
                    let who = owner(nodes, &topic).unwrap();
                    owned[nodes.iter().position(|n| *n == who).unwrap()] += 1;
                }
                for count in owned {
                    let share = count as f64 / N as f64;
                    assert!(
                        (0.31..0.356).contains(&share),
                        "{nodes:?} {prefix}: {owned:?}"
                    );
                }
            }
        }
    }

    /// Removing a member moves only its topics.
    #[test]
    fn a_departure_moves_only_the_departed_members_topics() {
        let all = ["n1", "n2", "n3", "n4"];
        let rest = ["n1", "n2", "n4"];
        for i in 0..5_000 {
            let topic = format!("t.{i}");
            let before = owner(all, &topic).unwrap();
            let after = owner(rest, &topic).unwrap();
            if before != "n3" {
                assert_eq!(before, after, "{topic} moved");
            }
        }
    }
}
