//! "Did you mean": the known name closest to a mistyped one, for settings, valves, choices and
//! model ids.

/// The candidate closest to `word` (ignoring case), if it is close enough to be a typo: at
/// most a third of the word's letters differ (at least one, at most three); failing that, the
/// one candidate the word abbreviates (`openpipe` for `openpipe_reporting`).
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let word = word.to_lowercase();
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    let letters = word.chars().count();
    let allowed = (letters / 3).clamp(1, 3);
    // Words further apart in length than `allowed` are further apart in edits too: skipping
    // them keeps a megabyte-long name (a caller's) from costing a table of a megabyte's rows.
    let typo = candidates
        .iter()
        .map(|c| (c.to_lowercase(), *c))
        .filter(|(lower, _)| lower.chars().count().abs_diff(letters) <= allowed)
        .map(|(lower, c)| (distance(&word, &lower), c))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    typo.or_else(|| {
        let mut longer = candidates.iter().filter(|c| word.len() >= 3 && c.to_lowercase().starts_with(&word));
        match (longer.next(), longer.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    })
}

/// `" (did you mean `x`?)"`, or nothing.
pub fn hint<'a, I>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

/// Edits (insert, delete, substitute, swap two neighbours) between two words.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_word_and_strangers_find_nothing() {
        let known = ["port", "host", "log_level", "TIMEOUT_SECONDS"];
        assert_eq!(closest("prot", known), Some("port"));
        assert_eq!(closest("LOG_LEVL", known), Some("log_level"));
        assert_eq!(closest("timeout_second", known), Some("TIMEOUT_SECONDS"));
        assert_eq!(closest("database", known), None);
        assert_eq!(closest("x", known), None);
        assert_eq!(closest("log", known), Some("log_level"));
        assert_eq!(closest("openpipe", ["openai_responses", "openpipe_reporting"]), Some("openpipe_reporting"));
        assert_eq!(closest("open", ["openai_responses", "openpipe_reporting"]), None);
        assert_eq!(hint("hots", known), " (did you mean `host`?)");
    }

    #[test]
    fn a_name_far_longer_than_every_candidate_is_not_compared() {
        // A caller's megabyte-long valve name: before, each candidate cost a table of a
        // million rows (seconds per request); now the lengths alone rule it out.
        let long = "a".repeat(1 << 20);
        assert_eq!(closest(&long, ["API_KEY", "BASE_URL", "aaaa"]), None);
        // Within reach by length, still found.
        assert_eq!(closest("api_keyss", ["API_KEY"]), Some("API_KEY"));
        assert_eq!(closest("ky", ["KEY"]), Some("KEY"));
    }
}
