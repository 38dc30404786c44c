//! Counters of what the filter did (docs/reporting.md §14), for logs and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Counters {
            $(pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Every counter by name, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters!(
    captured,
    reported,
    queued,
    attempts,
    delivered,
    retried,
    dead_lettered,
    duplicates,
    skipped_by_type,
    captures_evicted,
    captures_too_large,
    task_captures,
    task_reports,
    outlet_without_answer,
    report_build_errors,
    dpo_pairs_detected,
    dpo_pairs_confirmed,
    dpo_pairs_submitted,
    dataset_entries_queued,
    dataset_entries_submitted,
);
