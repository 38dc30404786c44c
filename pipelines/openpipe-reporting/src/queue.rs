//! Writing a turn's reports to the outbox (docs/reporting.md §5.2 step 8, §7.6): one write for
//! the reports, the dataset jobs and the records that change with them, then a wake-up for the
//! delivery worker.

use std::sync::atomic::Ordering::Relaxed;

use sluice_sdk::outbox::{KvWrite, NewEntry};
use sluice_sdk::StoreError;

use crate::report::Turn;
use crate::runtime::Runtime;
use crate::valves::ReportingValves;
use crate::{delivery, OpenPipeReporting, QUEUE};

impl OpenPipeReporting {
    /// Writes a turn's reports (plus `extra` work and `kv` changes) to the outbox in one
    /// transaction and wakes the worker; a report over `MAX_REPORT_BYTES` even after shrinking
    /// is kept as a dead letter (§7.6). Returns how many reports were queued.
    pub(crate) async fn queue_reports(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        turn: &Turn,
        extra: Vec<NewEntry>,
        kv: Vec<KvWrite>,
    ) -> Result<u64, StoreError> {
        let mut entries = Vec::new();
        let mut too_large = Vec::new();
        for b in turn.reports(v.MAX_REPORT_BYTES as usize) {
            let id = uuid::Uuid::new_v4().to_string();
            if b.too_large {
                too_large.push(id.clone());
            }
            entries.push(NewEntry { id, kind: delivery::KIND_REPORT.into(), target: "/report".into(), body: b.body });
        }
        let reports = entries.len() as u64;
        entries.extend(extra);
        let count = entries.len() as u64;
        let sizes: Vec<usize> = if v.DEBUG_LOGGING {
            entries.iter().map(|e| crate::shrink::serialized_len(&e.body)).collect()
        } else {
            Vec::new()
        };
        rt.outbox.enqueue(QUEUE, entries, kv).await?;
        for id in &too_large {
            rt.outbox.dead_letter(QUEUE, id, None, "too_large").await?;
            self.counters.dead_lettered.fetch_add(1, Relaxed);
            tracing::warn!(id = %id, "openpipe: report larger than MAX_REPORT_BYTES after shrinking; dead-lettered");
        }
        self.counters.queued.fetch_add(count, Relaxed);
        if v.DEBUG_LOGGING {
            tracing::debug!(message_id = %turn.message_id, ?sizes, "openpipe: report queued");
        }
        rt.wake.notify_one();
        Ok(reports)
    }
}
