//! The optional catalog: the resources a construction app needs beyond the nine core
//! ones (drawing areas and drawings, document folders and files, RFI replies, daily
//! logs, commitments, change order packages, meetings, inspections), plus recycle bins
//! and `filters[include_deleted]`.
//!
//! Off unless the world has a `"catalog"` object: without one the stand-in serves, lists
//! and counts exactly what it did before the catalog existed. With one, every catalog
//! record still lives in its project's id space (`project * 100000 + i`, like the core
//! tools), so no id of any existing resource moves and every id stays below 2^53. Nested
//! records (a drawing in its area, a folder or file in its folder, a reply to its RFI)
//! find their container by arithmetic on `i`; nothing is materialised, so a benchmark
//! world with hundreds of thousands of drawings costs no memory until it is read.

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::world::{Resource, MAX_RECORDS};

/// The first day that has daily logs; day `d` (0-based) is this date plus `d` days.
pub const FIRST_LOG_DAY: (i32, u32, u32) = (2026, 1, 1);

/// How much of each catalog resource a project has. Every field is optional; `"catalog":
/// {}` turns the catalog on with these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalog {
    /// Drawing areas per project.
    pub drawing_areas: u64,
    pub drawings_per_area: u64,
    /// Folders directly under each project's root folder.
    pub folders: u64,
    /// Subfolders in each of those folders (so the tree is root → folder → subfolder).
    pub subfolders_per_folder: u64,
    /// Files in every folder and subfolder (the root holds folders only).
    pub files_per_folder: u64,
    /// Replies to each generated RFI.
    pub replies_per_rfi: u64,
    /// Days with daily logs, from 2026-01-01 on.
    pub daily_log_days: u64,
    pub manpower_logs_per_day: u64,
    pub notes_logs_per_day: u64,
    pub weather_logs_per_day: u64,
    /// Per project; `null` = the world's `records_per_resource`.
    pub work_order_contracts: Option<u64>,
    pub purchase_order_contracts: Option<u64>,
    pub change_order_packages: Option<u64>,
    pub meetings: Option<u64>,
    pub inspections: Option<u64>,
    /// "YYYY-MM-DD": the date a daily-log request without a date answers for, and the
    /// date of added daily logs; `null` = the clock's current UTC date.
    pub today: Option<String>,
}

impl Catalog {
    pub const DEFAULT: Catalog = Catalog {
        drawing_areas: 5,
        drawings_per_area: 4,
        folders: 2,
        subfolders_per_folder: 2,
        files_per_folder: 3,
        replies_per_rfi: 2,
        daily_log_days: 120,
        manpower_logs_per_day: 2,
        notes_logs_per_day: 1,
        weather_logs_per_day: 1,
        work_order_contracts: None,
        purchase_order_contracts: None,
        change_order_packages: None,
        meetings: None,
        inspections: None,
        today: None,
    };
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog::DEFAULT
    }
}

/// The layout used to compute records of a world without a catalog (which has none of
/// them, but whose ids can still be asked about).
pub static DEFAULT_CATALOG: Catalog = Catalog::DEFAULT;

impl Catalog {
    /// Non-root folders (top-level folders and their subfolders).
    fn inner_folders(&self) -> Option<u64> {
        self.folders
            .checked_mul(self.subfolders_per_folder)?
            .checked_add(self.folders)
    }

    fn checked_generated(&self, resource: Resource, records: u64) -> Option<u64> {
        Some(match resource {
            Resource::DrawingAreas => self.drawing_areas,
            Resource::Drawings => self.drawing_areas.checked_mul(self.drawings_per_area)?,
            Resource::Folders => self.inner_folders()?.checked_add(1)?,
            Resource::Files => self.inner_folders()?.checked_mul(self.files_per_folder)?,
            Resource::RfiReplies => records.checked_mul(self.replies_per_rfi)?,
            Resource::ManpowerLogs | Resource::NotesLogs | Resource::WeatherLogs => self
                .daily_log_days
                .checked_mul(self.logs_per_day(resource))?,
            Resource::WorkOrderContracts => self.work_order_contracts.unwrap_or(records),
            Resource::PurchaseOrderContracts => self.purchase_order_contracts.unwrap_or(records),
            Resource::ChangeOrderPackages => self.change_order_packages.unwrap_or(records),
            Resource::Meetings => self.meetings.unwrap_or(records),
            Resource::Inspections => self.inspections.unwrap_or(records),
            _ => 0,
        })
    }

    /// How many records of a catalog resource each project has (`records` is the
    /// world's `records_per_resource`, which also counts the RFIs replies go to).
    pub fn generated(&self, resource: Resource, records: u64) -> u64 {
        self.checked_generated(resource, records).unwrap_or(0)
    }

    pub fn validate(&self, records: u64) -> Result<(), String> {
        for resource in Resource::CATALOG {
            match self.checked_generated(resource, records) {
                Some(n) if n <= MAX_RECORDS => {}
                _ => {
                    return Err(format!(
                        "catalog: {} per project must stay at most {MAX_RECORDS} \
                         (they share the project's id space)",
                        resource.name()
                    ))
                }
            }
        }
        match &self.today {
            Some(day) => parse_date(day)
                .map(drop)
                .map_err(|e| format!("catalog.today: {e}")),
            None => Ok(()),
        }
    }

    pub fn logs_per_day(&self, resource: Resource) -> u64 {
        match resource {
            Resource::ManpowerLogs => self.manpower_logs_per_day,
            Resource::NotesLogs => self.notes_logs_per_day,
            Resource::WeatherLogs => self.weather_logs_per_day,
            _ => 0,
        }
    }

    /// The day (0-based from 2026-01-01) and the position within it (1-based) of
    /// generated daily log `i`.
    pub fn log_day(&self, resource: Resource, i: u64) -> (u64, u64) {
        let per_day = self.logs_per_day(resource).max(1);
        ((i - 1) / per_day, (i - 1) % per_day + 1)
    }

    /// The index (in the project) of the container of generated record `i`: a
    /// drawing's area, a reply's RFI, a folder's or file's folder. `None` for the root
    /// folder and for resources that do not nest.
    pub fn container_index(&self, resource: Resource, i: u64) -> Option<u64> {
        match resource {
            Resource::Drawings => Some((i - 1) / self.drawings_per_area.max(1) + 1),
            Resource::RfiReplies => Some((i - 1) / self.replies_per_rfi.max(1) + 1),
            // 1 is the root, 2..=1+folders its folders, then each folder's subfolders.
            Resource::Folders if i <= 1 => None,
            Resource::Folders if i <= 1 + self.folders => Some(1),
            Resource::Folders => {
                Some(2 + (i - 2 - self.folders) / self.subfolders_per_folder.max(1))
            }
            // Every non-root folder (index 2, 3, ...) holds `files_per_folder` files.
            Resource::Files => Some(2 + (i - 1) / self.files_per_folder.max(1)),
            _ => None,
        }
    }

    /// The generated children of the container with index `c` (the inverse of
    /// `container_index`), as indexes; empty for a container that was added later.
    /// `records` is the world's `records_per_resource` (the generated RFIs).
    pub fn child_indexes(&self, resource: Resource, c: u64, records: u64) -> std::ops::Range<u64> {
        let block = |c: u64, count: u64, per: u64| {
            if (1..=count).contains(&c) {
                (c - 1) * per + 1..c * per + 1
            } else {
                0..0
            }
        };
        let inner = self.inner_folders().unwrap_or(0);
        match resource {
            Resource::Drawings => block(c, self.drawing_areas, self.drawings_per_area),
            Resource::RfiReplies => block(c, records, self.replies_per_rfi),
            Resource::Folders if c == 1 => 2..2 + self.folders,
            Resource::Folders if (2..=1 + self.folders).contains(&c) => {
                let first = 2 + self.folders + (c - 2) * self.subfolders_per_folder;
                first..first + self.subfolders_per_folder
            }
            Resource::Files if (2..=1 + inner).contains(&c) => {
                block(c - 1, inner, self.files_per_folder)
            }
            _ => 0..0,
        }
    }
}

pub fn first_log_day() -> NaiveDate {
    let (y, m, d) = FIRST_LOG_DAY;
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

pub fn log_date(day: u64) -> NaiveDate {
    first_log_day() + Duration::days(day as i64)
}

/// `YYYY-MM-DD`, nothing else.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let valid = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(date) if valid => Ok(date),
        _ => Err(format!("{text:?} is not a date as YYYY-MM-DD")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_children_are_inverse() {
        let c = Catalog {
            drawing_areas: 3,
            drawings_per_area: 4,
            folders: 2,
            subfolders_per_folder: 3,
            files_per_folder: 2,
            replies_per_rfi: 2,
            ..Catalog::DEFAULT
        };
        let records = 5;
        for resource in [
            Resource::Drawings,
            Resource::Folders,
            Resource::Files,
            Resource::RfiReplies,
        ] {
            let generated = c.generated(resource, records);
            let containers = match resource {
                Resource::Drawings => c.drawing_areas,
                Resource::RfiReplies => records,
                _ => c.generated(Resource::Folders, records),
            };
            let mut seen = 0;
            for container in 1..=containers {
                for i in c.child_indexes(resource, container, records) {
                    assert!(i <= generated, "{resource:?} {i}");
                    assert_eq!(c.container_index(resource, i), Some(container));
                    seen += 1;
                }
            }
            // Every record has exactly one container, except the root folder.
            let rooted = u64::from(resource == Resource::Folders);
            assert_eq!(seen + rooted, generated, "{resource:?}");
            assert!(c
                .child_indexes(resource, containers + 1, records)
                .is_empty());
        }
        // The tree: root 1 → folders 2, 3 → subfolders 4..=6 (of 2) and 7..=9 (of 3).
        assert_eq!(c.generated(Resource::Folders, records), 9);
        assert_eq!(c.child_indexes(Resource::Folders, 1, records), 2..4);
        assert_eq!(c.child_indexes(Resource::Folders, 3, records), 7..10);
        assert!(c.child_indexes(Resource::Folders, 7, records).is_empty());
        assert_eq!(c.container_index(Resource::Folders, 1), None);
        assert!(c.child_indexes(Resource::Files, 1, records).is_empty());
        assert_eq!(c.child_indexes(Resource::Files, 9, records), 15..17);
    }

    #[test]
    fn daily_logs_run_from_the_first_log_day() {
        let c = Catalog::DEFAULT;
        assert_eq!(c.generated(Resource::ManpowerLogs, 25), 240);
        assert_eq!(c.log_day(Resource::ManpowerLogs, 1), (0, 1));
        assert_eq!(c.log_day(Resource::ManpowerLogs, 4), (1, 2));
        assert_eq!(log_date(0).to_string(), "2026-01-01");
        assert_eq!(log_date(31).to_string(), "2026-02-01");
        assert_eq!(log_date(119).to_string(), "2026-04-30");
    }

    #[test]
    fn sizes_are_bounded_by_the_project_id_space() {
        let bench = Catalog {
            drawing_areas: 20,
            drawings_per_area: 200,
            ..Catalog::DEFAULT
        };
        assert!(bench.validate(25).is_ok());
        assert_eq!(bench.generated(Resource::Drawings, 25), 4000);
        let too_big = Catalog {
            drawing_areas: 1000,
            drawings_per_area: 1000,
            ..Catalog::DEFAULT
        };
        assert!(too_big.validate(25).unwrap_err().contains("drawings"));
        let overflow = Catalog {
            drawing_areas: u64::MAX,
            drawings_per_area: 2,
            ..Catalog::DEFAULT
        };
        assert!(overflow.validate(25).is_err());
        assert!(Catalog::DEFAULT
            .validate(99_999)
            .unwrap_err()
            .contains("rfi_replies"));
        let today = |t: &str| Catalog {
            today: Some(t.to_string()),
            ..Catalog::DEFAULT
        };
        assert!(today("2026-02-28").validate(25).is_ok());
        for bad in ["2026-02-30", "2026-2-3", "today", "2026-02-28T00:00:00Z"] {
            assert!(today(bad).validate(25).is_err(), "{bad}");
        }
    }
}
