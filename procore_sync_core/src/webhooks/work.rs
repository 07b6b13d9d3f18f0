//! A batch of webhook events as the least work: one item per record.
//!
//! Events arrive duplicated and in any order, and a burst of edits to one record sends one
//! event per edit; each costs a request against the user's rate limit if taken one by one.
//! Only the record's latest state matters, so the batch is folded per record into one fetch
//! or one deletion.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::event::{Event, EventKind};
use super::resources::catalog_resource_for;

/// The record an item is about. Identity is `(resource, company_id, resource_id)`, the key
/// of `procore_records`; `project_id` only builds the fetch path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// The catalog resource name (`rfis`), not Procore's.
    pub resource: &'static str,
    pub company_id: Option<i64>,
    pub project_id: Option<i64>,
    pub resource_id: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Read the record's detail endpoint and upsert it. A 404 there means the record went
    /// away after the event: treat it as [`Work::MarkDeleted`].
    Fetch,
    /// Mark the record deleted without asking Procore (a deleted record has no detail
    /// endpoint to ask).
    MarkDeleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    pub record: RecordRef,
    pub work: Work,
    /// The newest event timestamp folded into this item.
    pub latest_event_at: DateTime<Utc>,
    /// Every distinct event this item settles, sorted: the inbox rows to mark done once the
    /// work is.
    pub event_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One item per record, sorted by `(resource, company_id, resource_id)`.
    pub items: Vec<WorkItem>,
    /// Events about resources the catalog does not have, sorted and distinct: nothing to do
    /// for them but mark them done.
    pub ignored_event_ids: Vec<String>,
}

/// Folds a batch of events into one [`WorkItem`] per record.
///
/// Per record, the event with the latest timestamp decides: a create or update is a
/// [`Work::Fetch`], a delete a [`Work::MarkDeleted`]. When a delete and a create or update
/// share the latest timestamp, the fetch wins: Procore sends duplicates even with equal
/// timestamps, so the order of such a pair is unknowable, and the fetch is right either way
/// (it reads the record, or gets the 404 that marks it deleted), for one request. A delete
/// wins only when it is strictly the latest.
///
/// The result depends only on the set of events: duplicates and any reordering of the batch
/// give the same plan.
pub fn plan_work(events: &[Event]) -> Plan {
    type Key = (&'static str, Option<i64>, i64);
    let mut winners: BTreeMap<Key, (&Event, Vec<&str>)> = BTreeMap::new();
    let mut ignored: Vec<String> = Vec::new();

    for event in events {
        let Some(resource) = catalog_resource_for(&event.resource_name) else {
            ignored.push(event.event_id.clone());
            continue;
        };
        let key = (resource, event.company_id, event.resource_id);
        let (winner, ids) = winners.entry(key).or_insert_with(|| (event, Vec::new()));
        ids.push(&event.event_id);
        if precedence(event, winner) == Ordering::Greater {
            *winner = event;
        }
    }

    let items = winners
        .into_iter()
        .map(|((resource, company_id, resource_id), (winner, mut ids))| {
            ids.sort_unstable();
            ids.dedup();
            WorkItem {
                record: RecordRef {
                    resource,
                    company_id,
                    project_id: winner.project_id,
                    resource_id,
                },
                work: match winner.kind {
                    EventKind::Create | EventKind::Update => Work::Fetch,
                    EventKind::Delete => Work::MarkDeleted,
                },
                latest_event_at: winner.timestamp,
                event_ids: ids.into_iter().map(str::to_owned).collect(),
            }
        })
        .collect();
    ignored.sort_unstable();
    ignored.dedup();
    Plan {
        items,
        ignored_event_ids: ignored,
    }
}

/// A total order on one record's events, so the winner does not depend on arrival order:
/// later timestamp first, then a fetch over a delete (see [`plan_work`]), then the
/// remaining fields, which only separate events that should not differ (a redelivery with
/// another project id) and only to stay deterministic.
fn precedence(a: &Event, b: &Event) -> Ordering {
    let fetches = |e: &Event| e.kind != EventKind::Delete;
    a.timestamp
        .cmp(&b.timestamp)
        .then_with(|| fetches(a).cmp(&fetches(b)))
        .then_with(|| a.kind.cmp(&b.kind))
        .then_with(|| a.project_id.cmp(&b.project_id))
        .then_with(|| a.event_id.cmp(&b.event_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + seconds, 0).unwrap_or_default()
    }

    fn event(id: &str, kind: EventKind, name: &str, resource_id: i64, seconds: i64) -> Event {
        Event {
            event_id: id.to_owned(),
            kind,
            resource_name: name.to_owned(),
            resource_id,
            company_id: Some(8),
            project_id: Some(6778),
            user_id: Some(1),
            timestamp: at(seconds),
        }
    }

    use EventKind::{Create, Delete, Update};

    fn rfi(resource_id: i64) -> RecordRef {
        RecordRef {
            resource: "rfis",
            company_id: Some(8),
            project_id: Some(6778),
            resource_id,
        }
    }

    /// Every rotation and the reverse of `events`, each also with every event sent twice.
    fn arrangements(events: &[Event]) -> Vec<Vec<Event>> {
        let mut out = Vec::new();
        for shift in 0..events.len() {
            let mut rotated = events.to_vec();
            rotated.rotate_left(shift);
            let mut reversed = rotated.clone();
            reversed.reverse();
            for batch in [rotated, reversed] {
                let mut doubled = batch.clone();
                doubled.extend(batch.iter().rev().cloned());
                out.push(batch);
                out.push(doubled);
            }
        }
        out
    }

    #[test]
    fn a_burst_on_one_record_is_one_fetch() {
        let events = vec![
            event("e1", Create, "RFIs", 1, 0),
            event("e2", Update, "RFIs", 1, 5),
            event("e3", Update, "RFIs", 1, 9),
        ];
        let plan = plan_work(&events);
        assert_eq!(
            plan.items,
            vec![WorkItem {
                record: rfi(1),
                work: Work::Fetch,
                latest_event_at: at(9),
                event_ids: vec!["e1".into(), "e2".into(), "e3".into()],
            }]
        );
        assert!(plan.ignored_event_ids.is_empty());
    }

    #[test]
    fn duplicates_and_reordering_give_the_same_plan() {
        let events = vec![
            event("a1", Create, "RFIs", 1, 0),
            event("a2", Update, "RFIs", 1, 3),
            event("a3", Delete, "RFIs", 1, 7),
            event("b1", Update, "Punch Items", 1, 2),
            event("b2", Delete, "Punch List Items", 1, 1),
            event("c1", Update, "Submittals", 9, 4),
            event("c2", Update, "Submittals", 9, 4),
            event("d1", Update, "Daily Logs", 3, 4),
        ];
        let expected = plan_work(&events);
        assert_eq!(expected.items.len(), 3);
        assert_eq!(expected.ignored_event_ids, vec!["d1".to_owned()]);
        for batch in arrangements(&events) {
            assert_eq!(plan_work(&batch), expected, "{batch:?}");
        }
    }

    #[test]
    fn a_delete_wins_only_when_it_is_the_latest() {
        let deleted_last = plan_work(&[
            event("e1", Update, "RFIs", 1, 0),
            event("e2", Delete, "RFIs", 1, 1),
        ]);
        assert_eq!(deleted_last.items[0].work, Work::MarkDeleted);
        assert_eq!(deleted_last.items[0].latest_event_at, at(1));

        let updated_after = plan_work(&[
            event("e2", Delete, "RFIs", 1, 1),
            event("e3", Create, "RFIs", 1, 2),
        ]);
        assert_eq!(updated_after.items[0].work, Work::Fetch);
    }

    #[test]
    fn a_tie_between_delete_and_update_fetches() {
        let events = vec![
            event("e1", Delete, "RFIs", 1, 5),
            event("e2", Update, "RFIs", 1, 5),
        ];
        for batch in arrangements(&events) {
            let plan = plan_work(&batch);
            assert_eq!(plan.items.len(), 1);
            assert_eq!(plan.items[0].work, Work::Fetch, "{batch:?}");
            assert_eq!(
                plan.items[0].event_ids,
                vec!["e1".to_owned(), "e2".to_owned()]
            );
        }
        let only_deletes = plan_work(&[
            event("e1", Delete, "RFIs", 1, 5),
            event("e1", Delete, "RFIs", 1, 5),
        ]);
        assert_eq!(only_deletes.items[0].work, Work::MarkDeleted);
        assert_eq!(only_deletes.items[0].event_ids, vec!["e1".to_owned()]);
    }

    #[test]
    fn records_are_told_apart_by_resource_company_and_id() {
        let mut other_company = event("e4", Update, "RFIs", 1, 0);
        other_company.company_id = Some(9);
        let plan = plan_work(&[
            event("e1", Update, "RFIs", 1, 0),
            event("e2", Update, "RFIs", 2, 0),
            event("e3", Update, "Submittals", 1, 0),
            other_company,
            event("e5", Update, "rfis", 1, 1),
        ]);
        let keys: Vec<(&str, Option<i64>, i64, usize)> = plan
            .items
            .iter()
            .map(|i| {
                (
                    i.record.resource,
                    i.record.company_id,
                    i.record.resource_id,
                    i.event_ids.len(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                ("rfis", Some(8), 1, 2),
                ("rfis", Some(8), 2, 1),
                ("rfis", Some(9), 1, 1),
                ("submittals", Some(8), 1, 1),
            ]
        );
    }

    #[test]
    fn project_id_comes_from_the_deciding_event() {
        let mut projects = event("p1", Create, "Projects", 6778, 0);
        projects.project_id = None;
        let plan = plan_work(&[projects]);
        assert_eq!(plan.items[0].record.resource, "projects");
        assert_eq!(plan.items[0].record.project_id, None);
    }

    #[test]
    fn an_empty_batch_is_no_work() {
        assert_eq!(plan_work(&[]), Plan::default());
    }
}
