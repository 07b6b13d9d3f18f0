//! Job schedules as pg_cron accepts them, and when they next fire.
//!
//! Two kinds of schedule exist, as in pg_cron:
//!
//! * five cron fields, `minute hour day-of-month month day-of-week`, parsed the way
//!   pg_cron's copy of vixie cron (`src/entry.c`) parses them: lists `1,2,5`, ranges `1-5`,
//!   steps `*/5` and `1-30/7`, month names `jan`..`dec` and day names `sun`..`sat` in any
//!   case, `0` and `7` both Sunday, and `$` as the whole day-of-month field for the last
//!   day of the month. The macros `@yearly`/`@annually`, `@monthly`, `@weekly`,
//!   `@daily`/`@midnight` and `@hourly` stand for the fields vixie cron gives them;
//! * an interval, `N seconds` (or `N second`), 1 <= N <= 59, matched like pg_cron's
//!   `TryParseInterval` (`src/job_metadata.c`): any case, the space before the unit optional;
//! * `@restart` (or its vixie name `@reboot`): no time at all, the job runs once each time
//!   the scheduler starts (pg_cron's `WHEN_REBOOT`).
//!
//! Numbers are checked as pg_cron's `get_range` checks them: every value within its field,
//! and a step no larger than the field's highest value (`*/60` is no minute step), so a
//! number too large for any integer type is simply out of range. A schedule of 1000 bytes
//! or more is refused, as pg_cron's parse buffer refuses it.
//!
//! Day of month and day of week follow vixie cron: when neither field starts with `*`
//! (and `$` counts as a restricted day of month) a day matches if either field matches;
//! otherwise it must match both.
//!
//! Where this parser deliberately differs from pg_cron, it is stricter, because pg_cron
//! either ignores the text or accepts a schedule that can never fire, and a job that
//! silently never runs is worse than an error at `schedule` time:
//!
//! * text after a field's last item (`1-5#`, `*-5`) and a sixth field are errors; pg_cron
//!   skips to the next blank and ignores whatever follows the fifth field;
//! * a range whose start is after its end (`5-1`, `fri-sun`) is an error; pg_cron accepts
//!   it as an empty set;
//! * macros are matched in any case (pg_cron: lower case only), and text after a macro is
//!   an error (pg_cron ignores it);
//! * `N/step` is rejected like pg_cron does, but the message says how to write it
//!   (`N-max/step`, which is what other crons mean by it).

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike,
};

/// pg_cron parses a schedule in a buffer of this many bytes and refuses longer input.
pub const MAX_SCHEDULE_BYTES: usize = 999;

/// Parses a pg_cron schedule: five cron fields, an `@` macro, or `N seconds`.
pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
    parse_inner(expr).map_err(|fail| fail.into_error(expr))
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Cron fields, matched against the wall-clock time of the caller's time zone.
    Cron(CronSchedule),
    /// Runs every this many seconds (1-59), counted from the previous run.
    Interval(u32),
    /// `@restart`/`@reboot`: runs once each time the scheduler starts, never on a clock.
    Restart,
}

/// The five cron fields as bitsets, plus the vixie flags that change how they match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// Bit n set: minute n (0-59).
    minutes: u64,
    /// Bit n set: hour n (0-23).
    hours: u32,
    /// Bit n set: day n of the month (1-31).
    days_of_month: u32,
    /// Bit n set: month n (1-12).
    months: u16,
    /// Bit n set: day n of the week, 0 = Sunday (a 7 in the source is folded into 0).
    days_of_week: u8,
    /// `$`: the last day of the month, whatever its number.
    last_day_of_month: bool,
    /// The day-of-month field starts with `*` (vixie's DOM_STAR).
    dom_star: bool,
    /// The day-of-week field starts with `*` (vixie's DOW_STAR).
    dow_star: bool,
    /// The minute or hour field starts with `*` (vixie's MIN_STAR|HR_STAR). Such a
    /// schedule follows real time across DST changes; others fire once per wall-clock match.
    wildcard_time: bool,
    /// The source with blanks collapsed and names lower-cased, for `Display`.
    source: String,
}

impl Schedule {
    /// The first time strictly after `after` at which the schedule fires, or `None` if it
    /// can never fire again (`0 0 30 2 *`, or a date beyond what chrono represents) or is
    /// not tied to the clock at all (`@restart`).
    ///
    /// An interval schedule fires `N` seconds after `after`.
    ///
    /// A cron schedule fires on the first whole minute after `after` whose wall-clock time
    /// in `after`'s time zone matches the fields, so pass `after` in the zone the fields
    /// mean (pg_cron's default is GMT). Around DST changes it follows vixie cron's
    /// `cron.c`, where pg_cron's scheduling comes from; pg_cron itself checks each real
    /// minute against `cron.timezone`, so there a fixed-time job in the skipped hour does
    /// not run that day and one in the repeated hour runs twice. Here:
    ///
    /// * a schedule whose minute and hour fields are fixed (neither starts with `*`, e.g.
    ///   `30 2 * * *`) fires once per matching wall-clock minute. A time that does not
    ///   exist (spring forward) fires at the first instant after the gap, so `30 2 * * *`
    ///   runs at 03:00 EDT on 2026-03-08 in New York; several skipped times coalesce into
    ///   that one run. A time that occurs twice (fall back) fires only at its first
    ///   occurrence, so `30 1 * * *` runs at 01:30 EDT on 2026-11-01 and not again at
    ///   01:30 EST;
    /// * a schedule whose minute or hour field starts with `*` (`*/15 * * * *`,
    ///   `0 * * * *`, `@hourly`) follows real time: minutes in the gap do not exist, so
    ///   they do not fire, and minutes of the repeated hour fire in both passes, so a
    ///   "every 15 minutes" job keeps its cadence instead of pausing or bunching up.
    pub fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        match self {
            Schedule::Interval(seconds) => after
                .clone()
                .checked_add_signed(TimeDelta::try_seconds(i64::from(*seconds))?),
            Schedule::Cron(cron) => cron.next_after(after),
            Schedule::Restart => None,
        }
    }

    /// True for `@restart`: the job runs once when the scheduler starts, and only then.
    pub fn runs_at_scheduler_start(&self) -> bool {
        matches!(self, Schedule::Restart)
    }

    /// The interval of an `N seconds` schedule; `None` for a cron schedule.
    #[allow(
        dead_code,
        reason = "part of the module's API; not every build of the crate reads it"
    )]
    pub fn interval_seconds(&self) -> Option<u32> {
        match self {
            Schedule::Interval(seconds) => Some(*seconds),
            Schedule::Cron(_) | Schedule::Restart => None,
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

impl fmt::Display for Schedule {
    /// The normalized source: single spaces, lower-case names and macros, an interval as
    /// `N seconds` (`1 second`), and `@reboot` under its other name `@restart`. It parses
    /// back to the same schedule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron(cron) => f.write_str(&cron.source),
            Schedule::Interval(1) => f.write_str("1 second"),
            Schedule::Interval(seconds) => write!(f, "{seconds} seconds"),
            Schedule::Restart => f.write_str("@restart"),
        }
    }
}

/// One of the five cron fields, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

const FIELDS: [Field; 5] = [
    Field::Minute,
    Field::Hour,
    Field::DayOfMonth,
    Field::Month,
    Field::DayOfWeek,
];

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day of month",
            Field::Month => "month",
            Field::DayOfWeek => "day of week",
        }
    }

    fn min(self) -> u32 {
        match self {
            Field::DayOfMonth | Field::Month => 1,
            _ => 0,
        }
    }

    fn max(self) -> u32 {
        match self {
            Field::Minute => 59,
            Field::Hour => 23,
            Field::DayOfMonth => 31,
            Field::Month => 12,
            // 7 is accepted as a second Sunday, as in vixie cron.
            Field::DayOfWeek => 7,
        }
    }

    /// Names stand for `min() + index`, as in vixie's `get_number`.
    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &MONTH_NAMES,
            Field::DayOfWeek => &DAY_NAMES,
            _ => &[],
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with a schedule. The field, the quoted text and the position live in
/// [`ScheduleError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleErrorKind {
    Empty,
    /// Longer than [`MAX_SCHEDULE_BYTES`].
    TooLong {
        bytes: usize,
    },
    /// Fewer than five fields.
    FieldCount {
        found: usize,
    },
    /// More than five fields; the error points at the sixth.
    ExtraField {
        found: usize,
    },
    OutOfRange {
        min: u32,
        max: u32,
    },
    NotANumber,
    EmptyListItem,
    ZeroStep,
    /// A step above the field's highest value, `*/60` in minutes (pg_cron: `num3 > high`).
    StepOutOfRange {
        max: u32,
    },
    /// `-` or `/` at the end of an item.
    MissingNumber {
        after: char,
    },
    /// `5/10`; `suggestion` is the range form, `5-59/10`.
    StepWithoutRange {
        suggestion: String,
    },
    ReversedRange,
    UnexpectedCharacter(char),
    /// `$` mixed with other items in the day-of-month field.
    LastDayNotAlone,
    /// `$` in a field other than day of month.
    LastDayOutsideDayOfMonth,
    UnknownMacro,
    TextAfterMacro,
    IntervalOutOfRange,
    IntervalUnit,
    TextAfterInterval,
}

/// A schedule that does not parse, with what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    input: String,
    kind: ScheduleErrorKind,
    field: Option<Field>,
    /// The text the message quotes: a token, an item or a whole field.
    token: String,
    /// 1-based character position in `input`.
    position: Option<usize>,
}

#[allow(
    dead_code,
    reason = "for callers that build their own messages; not every build uses them"
)]
impl ScheduleError {
    pub fn kind(&self) -> &ScheduleErrorKind {
        &self.kind
    }

    /// The 1-based character position in the original string where the problem starts.
    pub fn position(&self) -> Option<usize> {
        self.position
    }

    pub fn field(&self) -> Option<Field> {
        self.field
    }

    pub fn input(&self) -> &str {
        &self.input
    }
}

const FIVE_FIELDS: &str = "expected 5 fields (minute hour day-of-month month day-of-week)";

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid schedule \"{}\": ", self.input)?;
        let t = &self.token;
        // Every kind that quotes a position sets one; 0 only shows if that ever breaks.
        let p = self.position.unwrap_or(0);
        let field = self.field.map_or("", Field::name);
        match &self.kind {
            ScheduleErrorKind::Empty => write!(
                f,
                "the schedule is empty; expected 5 cron fields, an @ macro such as @daily, \
                 or \"N seconds\""
            ),
            ScheduleErrorKind::TooLong { bytes } => write!(
                f,
                "the schedule is {bytes} bytes long; at most {MAX_SCHEDULE_BYTES} are allowed \
                 (as in pg_cron)"
            ),
            ScheduleErrorKind::FieldCount { found } => write!(f, "{FIVE_FIELDS}, found {found}"),
            ScheduleErrorKind::ExtraField { found } => {
                write!(
                    f,
                    "{FIVE_FIELDS}, found {found}: \"{t}\" at position {p} is extra"
                )
            }
            ScheduleErrorKind::OutOfRange { min, max } => {
                write!(
                    f,
                    "{field} field \"{t}\" at position {p} is out of range {min}-{max}"
                )
            }
            ScheduleErrorKind::NotANumber => {
                write!(f, "{field} field \"{t}\" at position {p} is not a number")?;
                match self.field {
                    Some(Field::Month) => f.write_str(" or a month name (jan-dec)"),
                    Some(Field::DayOfWeek) => f.write_str(" or a day name (sun-sat)"),
                    _ => Ok(()),
                }
            }
            ScheduleErrorKind::EmptyListItem => {
                write!(
                    f,
                    "{field} field \"{t}\" has an empty list item at position {p}"
                )
            }
            ScheduleErrorKind::ZeroStep => write!(
                f,
                "{field} field \"{t}\" has a step of 0 at position {p}; the step must be at least 1"
            ),
            ScheduleErrorKind::StepOutOfRange { max } => write!(
                f,
                "{field} field \"{t}\" has a step out of range 1-{max} at position {p}"
            ),
            ScheduleErrorKind::MissingNumber { after } => write!(
                f,
                "{field} field \"{t}\" is missing a number after '{after}' at position {p}"
            ),
            ScheduleErrorKind::StepWithoutRange { suggestion } => write!(
                f,
                "{field} field \"{t}\" at position {p} has a step but no range; write \
                 \"{suggestion}\" (pg_cron rejects \"N/step\")"
            ),
            ScheduleErrorKind::ReversedRange => {
                write!(
                    f,
                    "{field} field \"{t}\" at position {p} is a range whose start is after its end"
                )?;
                if self.field == Some(Field::DayOfWeek) {
                    f.write_str("; Sunday at the end of a range is 7, e.g. \"5-7\"")?;
                }
                Ok(())
            }
            ScheduleErrorKind::UnexpectedCharacter(c) => {
                write!(
                    f,
                    "{field} field \"{t}\" has an unexpected character '{c}' at position {p}"
                )
            }
            ScheduleErrorKind::LastDayNotAlone => write!(
                f,
                "{field} field \"{t}\" at position {p}: \"$\" (last day of the month) must be \
                 the whole field"
            ),
            ScheduleErrorKind::LastDayOutsideDayOfMonth => write!(
                f,
                "{field} field \"{t}\" at position {p}: \"$\" (last day of the month) is only \
                 allowed as the whole day of month field"
            ),
            ScheduleErrorKind::UnknownMacro => write!(
                f,
                "unknown macro \"{t}\" at position {p}; expected @yearly, @annually, @monthly, \
                 @weekly, @daily, @midnight, @hourly, @restart or @reboot"
            ),
            ScheduleErrorKind::TextAfterMacro => write!(
                f,
                "unexpected \"{t}\" at position {p}; an @ macro must be the whole schedule"
            ),
            ScheduleErrorKind::IntervalOutOfRange => write!(
                f,
                "interval \"{t}\" at position {p} is out of range 1-59 seconds; use a cron \
                 expression for longer periods"
            ),
            ScheduleErrorKind::IntervalUnit => write!(
                f,
                "unknown interval unit \"{t}\" at position {p}; expected \"second\" or \"seconds\""
            ),
            ScheduleErrorKind::TextAfterInterval => write!(
                f,
                "unexpected \"{t}\" at position {p} after the interval; expected \"N seconds\""
            ),
        }
    }
}

impl std::error::Error for ScheduleError {}

/// An error before the input is attached; `byte` is an offset into the input so positions
/// can be turned into character counts once, at the end.
struct Fail {
    kind: ScheduleErrorKind,
    field: Option<Field>,
    token: String,
    byte: Option<usize>,
}

impl Fail {
    fn at(kind: ScheduleErrorKind, field: Option<Field>, token: &str, byte: usize) -> Fail {
        Fail {
            kind,
            field,
            token: token.to_string(),
            byte: Some(byte),
        }
    }

    /// For problems with the schedule as a whole, which have no one place to point at.
    fn whole(kind: ScheduleErrorKind) -> Fail {
        Fail {
            kind,
            field: None,
            token: String::new(),
            byte: None,
        }
    }

    fn into_error(self, input: &str) -> ScheduleError {
        let position = self
            .byte
            .map(|b| input.get(..b).map_or(b, |prefix| prefix.chars().count()) + 1);
        ScheduleError {
            input: input.to_string(),
            kind: self.kind,
            field: self.field,
            token: self.token,
            position,
        }
    }
}

/// A blank-separated word of the input and the byte offset where it starts.
#[derive(Clone, Copy)]
struct Word<'a> {
    text: &'a str,
    byte: usize,
}

fn split_words(input: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in input.char_indices() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                out.push(Word {
                    text: &input[s..i],
                    byte: s,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Word {
            text: &input[s..],
            byte: s,
        });
    }
    out
}

fn parse_inner(input: &str) -> Result<Schedule, Fail> {
    if input.len() > MAX_SCHEDULE_BYTES {
        return Err(Fail::whole(ScheduleErrorKind::TooLong {
            bytes: input.len(),
        }));
    }
    let words = split_words(input);
    let Some((&first, rest)) = words.split_first() else {
        return Err(Fail::whole(ScheduleErrorKind::Empty));
    };
    if first.text.starts_with('@') {
        return parse_macro(first, rest);
    }
    if words.len() != 5 && looks_like_interval(first, rest) {
        return parse_interval(first, rest);
    }
    if words.len() > 5 {
        let extra = words[5];
        return Err(Fail::at(
            ScheduleErrorKind::ExtraField { found: words.len() },
            None,
            extra.text,
            extra.byte,
        ));
    }
    if words.len() < 5 {
        return Err(Fail::whole(ScheduleErrorKind::FieldCount {
            found: words.len(),
        }));
    }
    let source = words
        .iter()
        .map(|w| w.text.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    parse_fields(&words, source).map(Schedule::Cron)
}

fn parse_macro(word: Word<'_>, rest: &[Word<'_>]) -> Result<Schedule, Fail> {
    let name = word.text.to_ascii_lowercase();
    // The expansions set the same fields and star flags as vixie's `load_entry`; `None` is
    // `@restart`, which has no fields.
    let expansion = match name.as_str() {
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        "@monthly" => Some("0 0 1 * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        "@reboot" | "@restart" => None,
        _ => {
            return Err(Fail::at(
                ScheduleErrorKind::UnknownMacro,
                None,
                word.text,
                word.byte,
            ))
        }
    };
    if let Some(extra) = rest.first() {
        return Err(Fail::at(
            ScheduleErrorKind::TextAfterMacro,
            None,
            extra.text,
            extra.byte,
        ));
    }
    let Some(expansion) = expansion else {
        return Ok(Schedule::Restart);
    };
    // The expansion is a constant, so an error here would point into text the user never
    // wrote; report it against the macro instead.
    parse_fields(&split_words(expansion), name)
        .map(Schedule::Cron)
        .map_err(|_| Fail::at(ScheduleErrorKind::UnknownMacro, None, word.text, word.byte))
}

/// pg_cron tries the cron form and then the interval form, and reports only "invalid
/// schedule" when both fail. Choosing by shape instead lets the error speak to what the user
/// meant: a number glued to or followed by a word reads as an interval (the caller already
/// sent five-word input to the cron parser).
fn looks_like_interval(first: Word<'_>, rest: &[Word<'_>]) -> bool {
    let first = first.text;
    if !first.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let glued_unit = first
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .starts_with(|c: char| c.is_ascii_alphabetic());
    let separate_unit = first.bytes().all(|b| b.is_ascii_digit())
        && rest
            .first()
            .is_some_and(|w| w.text.starts_with(|c: char| c.is_ascii_alphabetic()));
    glued_unit || separate_unit
}

fn parse_interval(first: Word<'_>, rest: &[Word<'_>]) -> Result<Schedule, Fail> {
    let digits_len = first.text.bytes().take_while(u8::is_ascii_digit).count();
    let number = &first.text[..digits_len];
    let (unit, unit_byte, rest) = match rest.split_first() {
        _ if digits_len < first.text.len() => {
            (&first.text[digits_len..], first.byte + digits_len, rest)
        }
        Some((second, after)) => (second.text, second.byte, after),
        // looks_like_interval sends a bare number only when a unit word follows it.
        None => ("", first.byte + first.text.len(), rest),
    };
    if !unit.eq_ignore_ascii_case("second") && !unit.eq_ignore_ascii_case("seconds") {
        return Err(Fail::at(
            ScheduleErrorKind::IntervalUnit,
            None,
            unit,
            unit_byte,
        ));
    }
    // Digits only, so a parse failure can only be overflow, which is out of range too.
    let seconds = number.parse::<u32>().unwrap_or(u32::MAX);
    if !(1..=59).contains(&seconds) {
        return Err(Fail::at(
            ScheduleErrorKind::IntervalOutOfRange,
            None,
            number,
            first.byte,
        ));
    }
    if let Some(extra) = rest.first() {
        return Err(Fail::at(
            ScheduleErrorKind::TextAfterInterval,
            None,
            extra.text,
            extra.byte,
        ));
    }
    Ok(Schedule::Interval(seconds))
}

fn parse_fields(words: &[Word<'_>], source: String) -> Result<CronSchedule, Fail> {
    let mut bits = [0u64; 5];
    let mut last_day_of_month = false;
    for (i, (field, word)) in FIELDS.iter().zip(words).enumerate() {
        if *field == Field::DayOfMonth && word.text == "$" {
            last_day_of_month = true;
            continue;
        }
        bits[i] = parse_field(*field, word.text, word.byte)?;
    }
    let star = |i: usize| words.get(i).is_some_and(|w| w.text.starts_with('*'));
    let mut days_of_week = bits[4];
    if days_of_week & (1 << 7) != 0 {
        days_of_week = (days_of_week | 1) & !(1 << 7);
    }
    // The masks keep each value within its field's range, so the narrowing casts are exact.
    Ok(CronSchedule {
        minutes: bits[0],
        hours: (bits[1] & 0x00ff_ffff) as u32,
        days_of_month: (bits[2] & 0xffff_fffe) as u32,
        months: (bits[3] & 0x1ffe) as u16,
        days_of_week: (days_of_week & 0x7f) as u8,
        last_day_of_month,
        dom_star: star(2),
        dow_star: star(4),
        wildcard_time: star(0) || star(1),
        source,
    })
}

/// Parses one field (a comma-separated list) into a bitset; bit n means value n.
fn parse_field(field: Field, text: &str, base: usize) -> Result<u64, Fail> {
    let mut bits = 0u64;
    let mut offset = 0;
    for item in text.split(',') {
        let item_byte = base + offset;
        if item.is_empty() {
            return Err(Fail::at(
                ScheduleErrorKind::EmptyListItem,
                Some(field),
                text,
                item_byte,
            ));
        }
        bits |= parse_item(field, text, item, item_byte)?;
        offset += item.len() + 1;
    }
    Ok(bits)
}

/// Parses `*`, `*/step`, `n`, `a-b` or `a-b/step`; `item` starts at byte `item_byte` of the
/// input, and `field_text` is the whole field, for messages.
fn parse_item(field: Field, field_text: &str, item: &str, item_byte: usize) -> Result<u64, Fail> {
    let bytes = item.as_bytes();
    let mut i = 0;
    let (start, end, has_range) = if bytes.first() == Some(&b'*') {
        i = 1;
        (field.min(), field.max(), true)
    } else {
        let (start, len) = parse_value(field, field_text, item, item_byte, 0, None)?;
        i += len;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
            let (end, len) = parse_value(field, field_text, item, item_byte, i, Some('-'))?;
            i += len;
            (start, end, true)
        } else {
            (start, start, false)
        }
    };
    let mut step = 1;
    if bytes.get(i) == Some(&b'/') {
        let slash = i;
        i += 1;
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(unexpected(
                field,
                field_text,
                item,
                item_byte,
                i,
                Some(('/', slash)),
            ));
        }
        let step_text = &item[i..i + digits];
        // Digits only: a parse failure is overflow, which is out of range too.
        step = step_text.parse::<u32>().unwrap_or(u32::MAX);
        if step == 0 {
            return Err(Fail::at(
                ScheduleErrorKind::ZeroStep,
                Some(field),
                item,
                item_byte + i,
            ));
        }
        if step > field.max() {
            return Err(Fail::at(
                ScheduleErrorKind::StepOutOfRange { max: field.max() },
                Some(field),
                item,
                item_byte + i,
            ));
        }
        if !has_range {
            let suggestion = format!("{}-{}/{}", &item[..slash], field.max(), step_text);
            return Err(Fail::at(
                ScheduleErrorKind::StepWithoutRange { suggestion },
                Some(field),
                item,
                item_byte,
            ));
        }
        i += digits;
    }
    if i < item.len() {
        return Err(unexpected(field, field_text, item, item_byte, i, None));
    }
    if start > end {
        return Err(Fail::at(
            ScheduleErrorKind::ReversedRange,
            Some(field),
            item,
            item_byte,
        ));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v = match v.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(bits)
}

/// Reads a number or a name at `item[i..]`; returns its value and length in bytes.
/// `after` is the `-` that introduced it, for the "missing number" message.
fn parse_value(
    field: Field,
    field_text: &str,
    item: &str,
    item_byte: usize,
    i: usize,
    after: Option<char>,
) -> Result<(u32, usize), Fail> {
    let len = item.as_bytes()[i..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    if len == 0 {
        return Err(unexpected(
            field,
            field_text,
            item,
            item_byte,
            i,
            after.map(|c| (c, i - 1)),
        ));
    }
    let token = &item[i..i + len];
    let byte = item_byte + i;
    if token.bytes().all(|b| b.is_ascii_digit()) {
        let value = token.parse::<u32>().unwrap_or(u32::MAX);
        if value < field.min() || value > field.max() {
            return Err(Fail::at(
                ScheduleErrorKind::OutOfRange {
                    min: field.min(),
                    max: field.max(),
                },
                Some(field),
                token,
                byte,
            ));
        }
        return Ok((value, len));
    }
    match field
        .names()
        .iter()
        .position(|name| name.eq_ignore_ascii_case(token))
    {
        // At most 12 names, so the index fits.
        Some(index) => Ok((field.min() + index as u32, len)),
        None => Err(Fail::at(
            ScheduleErrorKind::NotANumber,
            Some(field),
            token,
            byte,
        )),
    }
}

/// The error for a character that cannot start what the grammar expects at `item[i..]`.
/// `after` is the `-` or `/` (and its index) that needed a number, if any.
fn unexpected(
    field: Field,
    field_text: &str,
    item: &str,
    item_byte: usize,
    i: usize,
    after: Option<(char, usize)>,
) -> Fail {
    match (item[i..].chars().next(), after) {
        (None, Some((c, at))) => Fail::at(
            ScheduleErrorKind::MissingNumber { after: c },
            Some(field),
            item,
            item_byte + at,
        ),
        (Some('$'), _) if field == Field::DayOfMonth => Fail::at(
            ScheduleErrorKind::LastDayNotAlone,
            Some(field),
            field_text,
            item_byte + i,
        ),
        (Some('$'), _) => Fail::at(
            ScheduleErrorKind::LastDayOutsideDayOfMonth,
            Some(field),
            field_text,
            item_byte + i,
        ),
        (Some(c), _) => Fail::at(
            ScheduleErrorKind::UnexpectedCharacter(c),
            Some(field),
            field_text,
            item_byte + i,
        ),
        // An empty item is caught by parse_field, and a missing number always has `after`.
        (None, None) => Fail::at(
            ScheduleErrorKind::EmptyListItem,
            Some(field),
            field_text,
            item_byte,
        ),
    }
}

/// Far enough that every possible schedule fires within it: the Gregorian calendar repeats
/// every 400 years, and e.g. Feb 29 on a Monday can be 40 years apart.
const SEARCH_YEARS: i32 = 401;

/// Candidates resolved to an instant at or before `after` are skipped; around a DST change
/// there are at most a few hours of them, so this only guards against a broken time zone.
const MAX_SKIPPED_CANDIDATES: usize = 10_000;

const ONE_MINUTE: TimeDelta = TimeDelta::minutes(1);

impl CronSchedule {
    fn next_after<Tz: TimeZone>(&self, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        if !self.can_ever_fire() {
            return None;
        }
        let tz = after.timezone();
        let local = after.naive_local();
        let start = next_whole_minute(local)?;
        let forward = self.first_run_from(&tz, after, start, None);
        // In the first pass of a repeated hour, the second pass of earlier wall times still
        // lies ahead in real time, although a wall-clock search from `local` never sees it.
        let repeated = if self.wildcard_time {
            match tz.from_local_datetime(&local) {
                LocalResult::Ambiguous(first, second) if first == *after => {
                    let shift = i64::from(first.offset().fix().local_minus_utc())
                        - i64::from(second.offset().fix().local_minus_utc());
                    let from = next_whole_minute(
                        local.checked_sub_signed(TimeDelta::try_seconds(shift)?)?,
                    )?;
                    self.first_run_from(&tz, after, from, Some(start))
                }
                _ => None,
            }
        } else {
            None
        };
        match (forward, repeated) {
            (Some(a), Some(b)) => Some(if b < a { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The first run after `after` among wall-clock times from `from` (before `until`).
    fn first_run_from<Tz: TimeZone>(
        &self,
        tz: &Tz,
        after: &DateTime<Tz>,
        from: NaiveDateTime,
        until: Option<NaiveDateTime>,
    ) -> Option<DateTime<Tz>> {
        let mut wall = from;
        for _ in 0..MAX_SKIPPED_CANDIDATES {
            let candidate = self.next_wall_time(wall)?;
            if until.is_some_and(|u| candidate >= u) {
                return None;
            }
            if let Some(run) = self.resolve(tz, candidate, after) {
                return Some(run);
            }
            wall = candidate.checked_add_signed(ONE_MINUTE)?;
        }
        None
    }

    /// The instant a matching wall-clock time runs at, if it is after `after`; see
    /// [`Schedule::next_after`] for the DST rules.
    fn resolve<Tz: TimeZone>(
        &self,
        tz: &Tz,
        wall: NaiveDateTime,
        after: &DateTime<Tz>,
    ) -> Option<DateTime<Tz>> {
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => (t > *after).then_some(t),
            LocalResult::Ambiguous(first, second) => {
                if first > *after {
                    Some(first)
                } else if self.wildcard_time && second > *after {
                    Some(second)
                } else {
                    None
                }
            }
            LocalResult::None if self.wildcard_time => None,
            LocalResult::None => end_of_gap(tz, wall).filter(|t| t > after),
        }
    }

    /// The first matching wall-clock minute at or after `from`, skipping whole months,
    /// days and hours that cannot match.
    fn next_wall_time(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let last_year = from.year().checked_add(SEARCH_YEARS)?;
        let mut date = from.date();
        let mut hour = from.hour();
        let mut minute = from.minute();
        loop {
            if date.year() > last_year {
                return None;
            }
            if self.months & (1 << date.month()) == 0 {
                date = first_of_next_month(date)?;
                (hour, minute) = (0, 0);
                continue;
            }
            if !self.day_matches(date) {
                date = date.succ_opt()?;
                (hour, minute) = (0, 0);
                continue;
            }
            let Some(h) = next_bit(u64::from(self.hours), hour) else {
                date = date.succ_opt()?;
                (hour, minute) = (0, 0);
                continue;
            };
            if h != hour {
                (hour, minute) = (h, 0);
            }
            match next_bit(self.minutes, minute) {
                Some(m) => return date.and_hms_opt(hour, m, 0),
                None => {
                    minute = 0;
                    hour += 1;
                    if hour > 23 {
                        date = date.succ_opt()?;
                        hour = 0;
                    }
                }
            }
        }
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let day = date.day();
        let dom = self.days_of_month & (1 << day) != 0
            || (self.last_day_of_month && day == days_in_month(date.year(), date.month()));
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// False only for day-of-month/month combinations that no calendar has, such as
    /// `0 0 30 2 *`; every weekday comes round on every date eventually.
    fn can_ever_fire(&self) -> bool {
        let dom = self.last_day_of_month
            || (1..=12u32).any(|m| {
                // Feb 29 exists in leap years, so it counts.
                let longest = if m == 2 { 29 } else { days_in_month(2001, m) };
                let days_that_exist = (u32::MAX >> (31 - longest)) & !1;
                self.months & (1 << m) != 0 && self.days_of_month & days_that_exist != 0
            });
        let dow = self.days_of_week != 0;
        let day = if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        };
        day && self.minutes != 0 && self.hours != 0 && self.months != 0
    }
}

/// The lowest set bit at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    let rest = bits.checked_shr(from)?;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// The first whole minute strictly after `t`.
fn next_whole_minute(t: NaiveDateTime) -> Option<NaiveDateTime> {
    t.with_second(0)?
        .with_nanosecond(0)?
        .checked_add_signed(ONE_MINUTE)
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The first instant after the DST gap that swallows `wall`. chrono's `TimeZone` has no
/// transition API, so this bisects for the second at which local time jumps past `wall`;
/// offsets are under 24 hours, so local time is before `wall` 25 hours earlier and after
/// it 25 hours later.
fn end_of_gap<Tz: TimeZone>(tz: &Tz, wall: NaiveDateTime) -> Option<DateTime<Tz>> {
    let local_at = |seconds: i64| -> Option<NaiveDateTime> {
        let utc = DateTime::from_timestamp(seconds, 0)?.naive_utc();
        let offset = tz.offset_from_utc_datetime(&utc).fix().local_minus_utc();
        utc.checked_add_signed(TimeDelta::try_seconds(i64::from(offset))?)
    };
    let target = wall.and_utc().timestamp();
    let mut before = target.checked_sub(25 * 3600)?;
    let mut past = target.checked_add(25 * 3600)?;
    if local_at(before)? >= wall || local_at(past)? <= wall {
        return None;
    }
    while past - before > 1 {
        let mid = before + (past - before) / 2;
        if local_at(mid)? < wall {
            before = mid;
        } else {
            past = mid;
        }
    }
    let utc = DateTime::from_timestamp(past, 0)?.naive_utc();
    Some(tz.from_utc_datetime(&utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use chrono_tz::{America::New_York, Europe::London};

    fn at(rfc3339: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(rfc3339).expect("test timestamps are valid RFC 3339")
    }

    fn next_in<Tz: TimeZone>(expr: &str, tz: &Tz, from: &str) -> Option<String> {
        let schedule = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let after = at(from).with_timezone(tz);
        schedule
            .next_after(&after)
            .map(|t| t.fixed_offset().to_rfc3339())
    }

    /// (expression, start, expected next run) in UTC.
    #[rustfmt::skip]
    const UTC_CASES: &[(&str, &str, &str)] = &[
        // every minute: strictly after, on a whole minute
        ("* * * * *", "2026-01-15T10:00:00Z", "2026-01-15T10:01:00+00:00"),
        ("* * * * *", "2026-01-15T10:00:30.5Z", "2026-01-15T10:01:00+00:00"),
        // steps
        ("*/5 * * * *", "2026-01-15T10:03:00Z", "2026-01-15T10:05:00+00:00"),
        ("*/5 * * * *", "2026-01-15T10:55:00Z", "2026-01-15T11:00:00+00:00"),
        ("0 */6 * * *", "2026-01-15T06:00:00Z", "2026-01-15T12:00:00+00:00"),
        // ranges with steps
        ("1-30/7 * * * *", "2026-01-15T10:16:00Z", "2026-01-15T10:22:00+00:00"),
        ("1-30/7 * * * *", "2026-01-15T10:29:00Z", "2026-01-15T11:01:00+00:00"),
        ("5-59/10 * * * *", "2026-01-15T10:06:00Z", "2026-01-15T10:15:00+00:00"),
        // lists
        ("0,15,45 9-17 * * *", "2026-01-15T17:45:00Z", "2026-01-16T09:00:00+00:00"),
        ("0,15,45 9-17 * * *", "2026-01-15T09:20:00Z", "2026-01-15T09:45:00+00:00"),
        // names, any case
        ("0 12 1 jan,JUL *", "2026-02-01T00:00:00Z", "2026-07-01T12:00:00+00:00"),
        ("0 8 * * mon-fri", "2026-01-16T09:00:00Z", "2026-01-19T08:00:00+00:00"),
        ("0 8 * * Sat", "2026-01-16T09:00:00Z", "2026-01-17T08:00:00+00:00"),
        ("0 0 * Feb-Mar/1 *", "2026-04-01T00:00:00Z", "2027-02-01T00:00:00+00:00"),
        // day of week 7 and 0 are Sunday (2026-01-15 is a Thursday)
        ("0 0 * * 7", "2026-01-15T00:00:00Z", "2026-01-18T00:00:00+00:00"),
        ("0 0 * * 0", "2026-01-15T00:00:00Z", "2026-01-18T00:00:00+00:00"),
        ("0 0 * * 5-7", "2026-01-17T12:00:00Z", "2026-01-18T00:00:00+00:00"),
        // $: last day of the month
        ("0 0 $ * *", "2026-01-15T00:00:00Z", "2026-01-31T00:00:00+00:00"),
        ("0 0 $ * *", "2026-01-31T00:00:00Z", "2026-02-28T00:00:00+00:00"),
        ("0 0 $ * *", "2028-02-01T00:00:00Z", "2028-02-29T00:00:00+00:00"),
        ("0 0 $ * *", "2026-04-01T00:00:00Z", "2026-04-30T00:00:00+00:00"),
        ("30 23 $ 2 *", "2026-03-01T00:00:00Z", "2027-02-28T23:30:00+00:00"),
        // $ is a restricted day of month, so with a day of week either matches
        ("0 0 $ * mon", "2026-01-27T00:00:00Z", "2026-01-31T00:00:00+00:00"),
        // Feb 29 only in leap years
        ("0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00+00:00"),
        // both day fields restricted: either matches (Jan 2 2026 is a Friday)
        ("0 0 13 * fri", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00+00:00"),
        ("0 0 13 * fri", "2026-01-10T00:00:00Z", "2026-01-13T00:00:00+00:00"),
        // a day field starting with * makes both required: odd days that are Mondays
        ("0 0 */2 * mon", "2026-01-01T00:00:00Z", "2026-01-05T00:00:00+00:00"),
        ("0 0 */2 * mon", "2026-01-05T00:00:00Z", "2026-01-19T00:00:00+00:00"),
        ("0 0 1 * */7", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00+00:00"),
        // year rollover
        ("* * * * *", "2026-12-31T23:59:00Z", "2027-01-01T00:00:00+00:00"),
        ("59 23 31 12 *", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00+00:00"),
        // macros
        ("@daily", "2026-01-15T10:00:00Z", "2026-01-16T00:00:00+00:00"),
        ("@midnight", "2026-01-15T10:00:00Z", "2026-01-16T00:00:00+00:00"),
        ("@hourly", "2026-01-15T10:00:00Z", "2026-01-15T11:00:00+00:00"),
        ("@weekly", "2026-01-15T10:00:00Z", "2026-01-18T00:00:00+00:00"),
        ("@monthly", "2026-01-15T10:00:00Z", "2026-02-01T00:00:00+00:00"),
        ("@yearly", "2026-01-15T10:00:00Z", "2027-01-01T00:00:00+00:00"),
        ("@Annually", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00+00:00"),
        // intervals
        ("5 seconds", "2026-01-15T10:00:00Z", "2026-01-15T10:00:05+00:00"),
        ("59 seconds", "2026-12-31T23:59:30Z", "2027-01-01T00:00:29+00:00"),
    ];

    #[test]
    fn next_runs_in_utc() {
        for (expr, from, expected) in UTC_CASES {
            assert_eq!(
                next_in(expr, &Utc, from).as_deref(),
                Some(*expected),
                "{expr} after {from}"
            );
        }
    }

    #[test]
    fn impossible_schedules_never_fire() {
        for expr in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 feb *"] {
            assert_eq!(next_in(expr, &Utc, "2026-01-01T00:00:00Z"), None, "{expr}");
        }
        // Either day field may match, and Februaries have Mondays.
        assert_eq!(
            next_in("0 0 31 2 mon", &Utc, "2026-01-01T00:00:00Z").as_deref(),
            Some("2026-02-02T00:00:00+00:00")
        );
    }

    #[test]
    fn rare_dates_are_found_across_a_century_gap() {
        // 2100 is not a leap year: Feb 29 skips from 2096 to 2104.
        assert_eq!(
            next_in("0 0 29 2 *", &Utc, "2096-03-01T00:00:00Z").as_deref(),
            Some("2104-02-29T00:00:00+00:00")
        );
        // Feb 29 on a Sunday (dow starts with *, so both must match): 2032, then 2060.
        assert_eq!(
            next_in("0 0 29 2 */7", &Utc, "2032-03-01T00:00:00Z").as_deref(),
            Some("2060-02-29T00:00:00+00:00")
        );
    }

    /// (expression, start, expected next run) in America/New_York around the 2026 changes:
    /// 02:00 EST -> 03:00 EDT on Mar 8, 02:00 EDT -> 01:00 EST on Nov 1.
    #[rustfmt::skip]
    const NEW_YORK_CASES: &[(&str, &str, &str)] = &[
        // a fixed time in the gap runs once, at the end of the gap, then as usual
        ("30 2 * * *", "2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00"),
        ("30 2 * * *", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"),
        ("0,30 2 * * *", "2026-03-08T01:59:00-05:00", "2026-03-08T03:00:00-04:00"),
        ("0,30 2 * * *", "2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"),
        // wildcard times follow real time: missing minutes just do not happen
        ("*/15 * * * *", "2026-03-08T01:50:00-05:00", "2026-03-08T03:00:00-04:00"),
        ("30 * * * *", "2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00"),
        // a fixed time in the repeated hour runs once, at its first occurrence
        ("30 1 * * *", "2026-11-01T00:00:00-04:00", "2026-11-01T01:30:00-04:00"),
        ("30 1 * * *", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"),
        ("30 1 * * *", "2026-11-01T01:10:00-05:00", "2026-11-02T01:30:00-05:00"),
        // wildcard times run in both passes of the repeated hour
        ("*/20 * * * *", "2026-11-01T01:40:00-04:00", "2026-11-01T01:00:00-05:00"),
        ("*/20 * * * *", "2026-11-01T01:00:00-05:00", "2026-11-01T01:20:00-05:00"),
        ("*/20 * * * *", "2026-11-01T01:20:00-04:00", "2026-11-01T01:40:00-04:00"),
        ("@hourly", "2026-11-01T00:30:00-04:00", "2026-11-01T01:00:00-04:00"),
        ("@hourly", "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00"),
        ("@hourly", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"),
        // ordinary days are wall-clock days
        ("0 9 * * *", "2026-07-01T12:00:00-04:00", "2026-07-02T09:00:00-04:00"),
        ("@daily", "2026-03-07T12:00:00-05:00", "2026-03-08T00:00:00-05:00"),
    ];

    #[test]
    fn dst_in_new_york() {
        for (expr, from, expected) in NEW_YORK_CASES {
            assert_eq!(
                next_in(expr, &New_York, from).as_deref(),
                Some(*expected),
                "{expr} after {from}"
            );
        }
    }

    #[test]
    fn fixed_time_runs_once_through_fall_back() {
        // Walk the schedule through the night and count the runs on Nov 1.
        let schedule = parse("30 1 * * *").expect("valid");
        let mut t = at("2026-10-31T12:00:00-04:00").with_timezone(&New_York);
        let mut runs = Vec::new();
        while let Some(next) = schedule.next_after(&t) {
            if next > at("2026-11-02T12:00:00-05:00") {
                break;
            }
            runs.push(next.fixed_offset().to_rfc3339());
            t = next;
        }
        assert_eq!(
            runs,
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
    }

    /// Europe/London 2026: 01:00 GMT -> 02:00 BST on Mar 29, 02:00 BST -> 01:00 GMT on Oct 25.
    #[rustfmt::skip]
    const LONDON_CASES: &[(&str, &str, &str)] = &[
        ("30 1 * * *", "2026-03-29T00:00:00+00:00", "2026-03-29T02:00:00+01:00"),
        ("30 1 * * *", "2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"),
        ("30 1 * * *", "2026-10-25T00:00:00+01:00", "2026-10-25T01:30:00+01:00"),
        ("30 1 * * *", "2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"),
        ("*/30 * * * *", "2026-10-25T01:30:00+01:00", "2026-10-25T01:00:00+00:00"),
        ("0 9 * * *", "2026-06-01T12:00:00+01:00", "2026-06-02T09:00:00+01:00"),
    ];

    #[test]
    fn dst_in_london() {
        for (expr, from, expected) in LONDON_CASES {
            assert_eq!(
                next_in(expr, &London, from).as_deref(),
                Some(*expected),
                "{expr} after {from}"
            );
        }
    }

    #[test]
    fn intervals() {
        for (expr, seconds) in [
            ("5 seconds", 5),
            ("1 second", 1),
            ("1 seconds", 1),
            ("59 seconds", 59),
            ("30seconds", 30),
            ("  10 SECONDS  ", 10),
            ("7 Second", 7),
            ("05 seconds", 5),
        ] {
            let schedule = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(schedule.interval_seconds(), Some(seconds), "{expr}");
        }
        assert_eq!(parse("* * * * *").expect("valid").interval_seconds(), None);
    }

    #[test]
    fn display_is_the_normalized_source_and_round_trips() {
        for (expr, shown) in [
            ("  */5   1-3 * JAN Mon  ", "*/5 1-3 * jan mon"),
            ("0\t0 $ * *", "0 0 $ * *"),
            ("@DAILY", "@daily"),
            ("@annually", "@annually"),
            ("05 Seconds", "5 seconds"),
            ("@RESTART", "@restart"),
            ("@reboot", "@restart"),
            ("1 second", "1 second"),
            ("30seconds", "30 seconds"),
        ] {
            let schedule = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(schedule.to_string(), shown, "{expr}");
            assert_eq!(
                parse(shown).expect("normalized form parses"),
                schedule,
                "{expr}"
            );
        }
        assert_eq!(
            "*/5 * * * *"
                .parse::<Schedule>()
                .expect("valid")
                .to_string(),
            "*/5 * * * *"
        );
    }

    #[test]
    fn macros_expand_like_vixie() {
        for (macro_, fields) in [
            ("@yearly", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
        ] {
            let (Ok(Schedule::Cron(a)), Ok(Schedule::Cron(b))) = (parse(macro_), parse(fields))
            else {
                panic!("{macro_} and {fields} should both parse as cron");
            };
            assert_eq!(
                CronSchedule {
                    source: String::new(),
                    ..a
                },
                CronSchedule {
                    source: String::new(),
                    ..b
                }
            );
        }
    }

    /// A minute-by-minute model of the documented rules, walking real time: a wildcard
    /// schedule fires at every instant whose wall time matches; a fixed one at the first
    /// occurrence of a matching wall time, or at the end of a gap that swallowed one.
    fn brute_force<Tz: TimeZone>(
        schedule: &Schedule,
        after: &DateTime<Tz>,
        minutes: i64,
    ) -> Option<DateTime<Tz>> {
        let Schedule::Cron(cron) = schedule else {
            return None;
        };
        let tz = after.timezone();
        let matches = |wall: NaiveDateTime| {
            cron.months & (1 << wall.month()) != 0
                && cron.day_matches(wall.date())
                && cron.hours & (1 << wall.hour()) != 0
                && cron.minutes & (1 << wall.minute()) != 0
        };
        let whole =
            |t: &DateTime<Tz>| t.naive_local().second() == 0 && t.naive_local().nanosecond() == 0;
        let mut t = after.clone().checked_add_signed(TimeDelta::seconds(1))?;
        while !whole(&t) {
            t = t.checked_add_signed(TimeDelta::seconds(1))?;
        }
        for _ in 0..minutes {
            let wall = t.naive_local();
            let previous = t.clone().checked_add_signed(-ONE_MINUTE)?.naive_local();
            let fires = if cron.wildcard_time {
                matches(wall)
            } else {
                let first = match tz.from_local_datetime(&wall) {
                    LocalResult::Ambiguous(first, _) => first == t,
                    _ => true,
                };
                let mut skipped = previous.checked_add_signed(ONE_MINUTE)?;
                let mut gap_hit = false;
                while skipped < wall {
                    gap_hit |= matches(skipped);
                    skipped = skipped.checked_add_signed(ONE_MINUTE)?;
                }
                (matches(wall) && first) || gap_hit
            };
            if fires {
                return Some(t);
            }
            t = t.checked_add_signed(ONE_MINUTE)?;
        }
        None
    }

    #[test]
    fn agrees_with_a_minute_by_minute_walk() {
        let expressions = [
            "* * * * *",
            "*/7 * * * *",
            "30 2 * * *",
            "0,30 1,2 * * *",
            "15 * * * *",
            "0 0 $ * *",
            "0 12 13 * fri",
            "0 0 */3 * mon",
            "45 23 * * 6",
            "*/20 1-3 * * *",
            "59 1 * * *",
            "0 2 8 3 *",
            "@hourly",
            "@daily",
            "5-59/10 2 * * sun",
        ];
        let starts = [
            "2026-03-07T22:17:00-05:00",
            "2026-03-08T01:59:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-10-31T23:59:30-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:05:00-05:00",
            "2026-12-31T23:59:00-05:00",
            "2028-02-28T12:00:00-05:00",
        ];
        for expr in expressions {
            let schedule = parse(expr).expect("valid");
            for start in starts {
                let mut after = at(start).with_timezone(&New_York);
                // Follow a few consecutive runs so each DST edge is crossed from both sides.
                for _ in 0..6 {
                    let fast = schedule.next_after(&after);
                    let window = 60 * 24 * 32;
                    // Yearly schedules are covered by the tables; walking a year is slow.
                    let beyond_window = fast
                        .as_ref()
                        .is_some_and(|f| *f > after + TimeDelta::minutes(window));
                    if !beyond_window {
                        let slow = brute_force(&schedule, &after, window);
                        assert_eq!(
                            fast,
                            slow,
                            "{expr} after {}",
                            after.fixed_offset().to_rfc3339()
                        );
                    }
                    let Some(next) = fast else { break };
                    after = next;
                }
            }
        }
    }

    /// pg_cron's verdict on a schedule, as its own regression suite records it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum PgCron {
        Accepts,
        Rejects,
    }
    use PgCron::{Accepts, Rejects};

    /// This parser's verdict, in pg_cron's terms.
    fn verdict(expr: &str) -> PgCron {
        match parse(expr) {
            Ok(_) => Accepts,
            Err(_) => Rejects,
        }
    }

    /// Every schedule that pg_cron's regression test (`sql/pg_cron-test.sql`, verdicts in
    /// `expected/pg_cron-test.out`, citusdata/pg_cron at 16618e6) passes to `cron.schedule`
    /// or `cron.schedule_in_database`, in file order, with its line and pg_cron's verdict.
    /// Lines 93, 99 and 114 fail in pg_cron for reasons other than the schedule (CONNECT
    /// privilege, unknown role, EXECUTE revoked); their schedule is one pg_cron accepts.
    #[rustfmt::skip]
    const PG_CRON_REGRESSION: &[(u32, &str, PgCron)] = &[
        (5, "* * * * *", Accepts),
        (10, "* * * * *", Accepts),
        (20, "0 10 * * *", Accepts),
        (27, "<repeat('a', 1000)>", Rejects),
        (30, "* * * *", Rejects),
        (33, "5 secondc", Rejects),
        (34, "50 seconds c", Rejects),
        (37, "*/0 10 * * *", Rejects),
        (38, "-1 * * * *", Rejects),
        (39, "*/-1 10 * * *", Rejects),
        (40, "*/60 10 * * *", Rejects),
        (41, "* * * 13 *", Rejects),
        (42, "* * * 0 *", Rejects),
        (43, "*/5000000000 10 * * *", Rejects),
        (46, "-1 seconds", Rejects),
        (47, "0 seconds", Rejects),
        (48, "60 seconds", Rejects),
        (49, "10000000000 seconds", Rejects),
        (52, "@restar", Rejects),
        (53, "@restart", Accepts),
        (56, "0 10 * * *", Accepts),
        (61, "0 11 * * *", Accepts),
        (66, "0 11 * * *", Accepts),
        (93, "0 11 * * *", Accepts),
        (99, "0 11 * * *", Accepts),
        (111, "0 11 * * *", Accepts),
        (114, "0 11 * * *", Accepts),
        (138, "0 11 * * *", Accepts),
        (146, "0 11 * * *", Accepts),
        (170, "1 second", Accepts),
        (171, " 30 sEcOnDs ", Accepts),
        (172, "59 seconds", Accepts),
        (173, "17  seconds ", Accepts),
        (177, "0 11 $ * *", Accepts),
        (181, "0 11 $foo * *", Rejects),
    ];

    /// No schedule of pg_cron's regression suite gets a different verdict here.
    #[test]
    fn pg_cron_regression_schedules_get_pg_cron_verdicts() {
        for &(line, expr, pg_cron) in PG_CRON_REGRESSION {
            let expr = match expr {
                "<repeat('a', 1000)>" => "a".repeat(1000),
                other => other.to_string(),
            };
            assert_eq!(
                verdict(&expr),
                pg_cron,
                "pg_cron-test.sql line {line}: {expr:?}: {:?}",
                parse(&expr)
            );
        }
        // The three that used to differ, with what they mean here.
        assert_eq!(parse("@restart"), Ok(Schedule::Restart));
        assert_eq!(
            parse("*/60 10 * * *").map_err(|e| e.kind().clone()),
            Err(ScheduleErrorKind::StepOutOfRange { max: 59 })
        );
        assert_eq!(
            parse("*/5000000000 10 * * *").map_err(|e| e.kind().clone()),
            Err(ScheduleErrorKind::StepOutOfRange { max: 59 })
        );
    }

    /// How pg_cron and this parser differ, on purpose: (schedule, pg_cron's verdict read from
    /// its `src/entry.c` / `src/job_metadata.c`, ours, why). The README's "Differences from
    /// pg_cron" table lists the same rows.
    #[rustfmt::skip]
    const DELIBERATE_DIFFERENCES: &[(&str, PgCron, PgCron, &str)] = &[
        // parse_cron_entry compares macro names with strcmp.
        ("@DAILY", Rejects, Accepts, "macros in any case, like month and day names"),
        ("@Restart", Rejects, Accepts, "macros in any case, like month and day names"),
        // get_string stops at the blank and nothing looks at the rest.
        ("@daily 0", Accepts, Rejects, "text after a macro is an error, not ignored"),
        // Nothing after the fifth field is read.
        ("* * * * * *", Accepts, Rejects, "a sixth field is an error, not ignored"),
        // get_list skips to the next blank after a range it could read.
        ("1-5# * * * *", Accepts, Rejects, "trailing text in a field is an error"),
        // set_range loops from 5 up to 1: no bit set, a job that never runs.
        ("5-1 * * * *", Accepts, Rejects, "a reversed range is an error, not an empty set"),
        // sscanf's %u takes a sign.
        ("+5 seconds", Accepts, Rejects, "an interval is digits only"),
    ];

    #[test]
    fn deliberate_differences_from_pg_cron() {
        for &(expr, pg_cron, ours, why) in DELIBERATE_DIFFERENCES {
            assert_ne!(pg_cron, ours, "{expr:?} is listed as a difference: {why}");
            assert_eq!(verdict(expr), ours, "{expr:?} ({why}): {:?}", parse(expr));
        }
    }

    #[test]
    fn restart_has_no_clock_time() {
        for expr in ["@restart", "@reboot", "  @REBOOT  "] {
            let schedule = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert!(schedule.runs_at_scheduler_start(), "{expr}");
            assert_eq!(
                schedule.next_after(&at("2026-01-15T10:00:00Z")),
                None,
                "{expr}"
            );
            assert_eq!(schedule.interval_seconds(), None, "{expr}");
        }
        for expr in ["* * * * *", "5 seconds", "@daily"] {
            assert!(
                !parse(expr).expect("valid").runs_at_scheduler_start(),
                "{expr}"
            );
        }
    }

    #[test]
    fn steps_up_to_the_field_maximum_are_accepted() {
        for expr in [
            "*/59 * * * *",
            "0 */23 * * *",
            "0 0 */31 * *",
            "0 0 1 */12 *",
            "0 0 * * */7",
        ] {
            parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
        // One value: the start. `*/59` is minutes 0 and 59.
        assert_eq!(
            next_in("*/59 * * * *", &Utc, "2026-01-15T10:00:00Z").as_deref(),
            Some("2026-01-15T10:59:00+00:00")
        );
    }

    #[test]
    fn schedules_of_pg_cron_buffer_size_are_refused() {
        // Long but valid: a minute list padded with repeats.
        let long = |bytes: usize| {
            let mut minutes = "0".to_string();
            while minutes.len() + ",0 * * * *".len() <= bytes {
                minutes.push_str(",0");
            }
            format!(
                "{minutes:<width$} * * * *",
                width = bytes - " * * * *".len()
            )
        };
        let fits = long(MAX_SCHEDULE_BYTES);
        assert_eq!(fits.len(), MAX_SCHEDULE_BYTES);
        parse(&fits).unwrap_or_else(|e| panic!("{} bytes: {e}", fits.len()));
        let too_long = long(MAX_SCHEDULE_BYTES + 1);
        let e = parse(&too_long).expect_err("1000 bytes");
        assert_eq!(e.kind(), &ScheduleErrorKind::TooLong { bytes: 1000 });
        assert!(
            e.to_string().ends_with(
                "the schedule is 1000 bytes long; at most 999 are allowed (as in pg_cron)"
            ),
            "{e}"
        );
    }

    /// (expression, exact message).
    #[rustfmt::skip]
    const BAD: &[(&str, &str)] = &[
        ("*/5 25 * * *", r#"invalid schedule "*/5 25 * * *": hour field "25" at position 5 is out of range 0-23"#),
        ("  */5 25 * * *", r#"invalid schedule "  */5 25 * * *": hour field "25" at position 7 is out of range 0-23"#),
        ("60 * * * *", r#"invalid schedule "60 * * * *": minute field "60" at position 1 is out of range 0-59"#),
        ("5-64 * * * *", r#"invalid schedule "5-64 * * * *": minute field "64" at position 3 is out of range 0-59"#),
        ("* * 0 * *", r#"invalid schedule "* * 0 * *": day of month field "0" at position 5 is out of range 1-31"#),
        ("* * 32 * *", r#"invalid schedule "* * 32 * *": day of month field "32" at position 5 is out of range 1-31"#),
        ("* * * 13 *", r#"invalid schedule "* * * 13 *": month field "13" at position 7 is out of range 1-12"#),
        ("* * * * 8", r#"invalid schedule "* * * * 8": day of week field "8" at position 9 is out of range 0-7"#),
        ("99999999999 * * * *", r#"invalid schedule "99999999999 * * * *": minute field "99999999999" at position 1 is out of range 0-59"#),
        ("* * * foo *", r#"invalid schedule "* * * foo *": month field "foo" at position 7 is not a number or a month name (jan-dec)"#),
        ("* * * january *", r#"invalid schedule "* * * january *": month field "january" at position 7 is not a number or a month name (jan-dec)"#),
        ("* * * * mon-friday", r#"invalid schedule "* * * * mon-friday": day of week field "friday" at position 13 is not a number or a day name (sun-sat)"#),
        ("* x * * *", r#"invalid schedule "* x * * *": hour field "x" at position 3 is not a number"#),
        ("* * jan * *", r#"invalid schedule "* * jan * *": day of month field "jan" at position 5 is not a number"#),
        ("1,,2 * * * *", r#"invalid schedule "1,,2 * * * *": minute field "1,,2" has an empty list item at position 3"#),
        ("0 1, * * *", r#"invalid schedule "0 1, * * *": hour field "1," has an empty list item at position 5"#),
        ("0 0 ,1 * *", r#"invalid schedule "0 0 ,1 * *": day of month field ",1" has an empty list item at position 5"#),
        ("*/0 * * * *", r#"invalid schedule "*/0 * * * *": minute field "*/0" has a step of 0 at position 3; the step must be at least 1"#),
        ("0 1-5/0 * * *", r#"invalid schedule "0 1-5/0 * * *": hour field "1-5/0" has a step of 0 at position 7; the step must be at least 1"#),
        ("*/ * * * *", r#"invalid schedule "*/ * * * *": minute field "*/" is missing a number after '/' at position 2"#),
        ("0 5- * * *", r#"invalid schedule "0 5- * * *": hour field "5-" is missing a number after '-' at position 4"#),
        ("5/10 * * * *", r#"invalid schedule "5/10 * * * *": minute field "5/10" at position 1 has a step but no range; write "5-59/10" (pg_cron rejects "N/step")"#),
        ("* 5-1 * * *", r#"invalid schedule "* 5-1 * * *": hour field "5-1" at position 3 is a range whose start is after its end"#),
        ("* * * * fri-sun", r#"invalid schedule "* * * * fri-sun": day of week field "fri-sun" at position 9 is a range whose start is after its end; Sunday at the end of a range is 7, e.g. "5-7""#),
        ("1-5# * * * *", r#"invalid schedule "1-5# * * * *": minute field "1-5#" has an unexpected character '#' at position 4"#),
        ("*-5 * * * *", r#"invalid schedule "*-5 * * * *": minute field "*-5" has an unexpected character '-' at position 2"#),
        ("é * * * *", r#"invalid schedule "é * * * *": minute field "é" has an unexpected character 'é' at position 1"#),
        ("* * $,1 * *", r#"invalid schedule "* * $,1 * *": day of month field "$,1" at position 5: "$" (last day of the month) must be the whole field"#),
        ("* * 1,$ * *", r#"invalid schedule "* * 1,$ * *": day of month field "1,$" at position 7: "$" (last day of the month) must be the whole field"#),
        ("$ * * * *", r#"invalid schedule "$ * * * *": minute field "$" at position 1: "$" (last day of the month) is only allowed as the whole day of month field"#),
        ("* * * *", r#"invalid schedule "* * * *": expected 5 fields (minute hour day-of-month month day-of-week), found 4"#),
        ("* * * * * *", r#"invalid schedule "* * * * * *": expected 5 fields (minute hour day-of-month month day-of-week), found 6: "*" at position 11 is extra"#),
        ("", r#"invalid schedule "": the schedule is empty; expected 5 cron fields, an @ macro such as @daily, or "N seconds""#),
        ("  \t ", "invalid schedule \"  \t \": the schedule is empty; expected 5 cron fields, an @ macro such as @daily, or \"N seconds\""),
        ("@fortnightly", r#"invalid schedule "@fortnightly": unknown macro "@fortnightly" at position 1; expected @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @restart or @reboot"#),
        ("@restar", r#"invalid schedule "@restar": unknown macro "@restar" at position 1; expected @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @restart or @reboot"#),
        ("@restart now", r#"invalid schedule "@restart now": unexpected "now" at position 10; an @ macro must be the whole schedule"#),
        ("*/60 10 * * *", r#"invalid schedule "*/60 10 * * *": minute field "*/60" has a step out of range 1-59 at position 3"#),
        ("0 */24 * * *", r#"invalid schedule "0 */24 * * *": hour field "*/24" has a step out of range 1-23 at position 5"#),
        ("0 0 1-31/32 * *", r#"invalid schedule "0 0 1-31/32 * *": day of month field "1-31/32" has a step out of range 1-31 at position 10"#),
        ("0 0 1 */13 *", r#"invalid schedule "0 0 1 */13 *": month field "*/13" has a step out of range 1-12 at position 9"#),
        ("0 0 * * */8", r#"invalid schedule "0 0 * * */8": day of week field "*/8" has a step out of range 1-7 at position 11"#),
        ("*/5000000000 10 * * *", r#"invalid schedule "*/5000000000 10 * * *": minute field "*/5000000000" has a step out of range 1-59 at position 3"#),
        ("0 0 * * 1-5/99999999999999999999", r#"invalid schedule "0 0 * * 1-5/99999999999999999999": day of week field "1-5/99999999999999999999" has a step out of range 1-7 at position 13"#),
        ("0 4294967296 * * *", r#"invalid schedule "0 4294967296 * * *": hour field "4294967296" at position 3 is out of range 0-23"#),
        ("@daily 0", r#"invalid schedule "@daily 0": unexpected "0" at position 8; an @ macro must be the whole schedule"#),
        ("0 seconds", r#"invalid schedule "0 seconds": interval "0" at position 1 is out of range 1-59 seconds; use a cron expression for longer periods"#),
        ("60 seconds", r#"invalid schedule "60 seconds": interval "60" at position 1 is out of range 1-59 seconds; use a cron expression for longer periods"#),
        ("5 secs", r#"invalid schedule "5 secs": unknown interval unit "secs" at position 3; expected "second" or "seconds""#),
        ("5 minutes", r#"invalid schedule "5 minutes": unknown interval unit "minutes" at position 3; expected "second" or "seconds""#),
        ("5sec", r#"invalid schedule "5sec": unknown interval unit "sec" at position 2; expected "second" or "seconds""#),
        ("5 seconds later", r#"invalid schedule "5 seconds later": unexpected "later" at position 11 after the interval; expected "N seconds""#),
    ];

    #[test]
    fn bad_schedules_say_what_and_where() {
        for (expr, message) in BAD {
            match parse(expr) {
                Ok(s) => panic!("{expr:?} parsed as {s:?}"),
                Err(e) => assert_eq!(e.to_string(), *message, "{expr:?}"),
            }
        }
    }

    #[test]
    fn errors_expose_field_and_position() {
        let e = parse("*/5 25 * * *").expect_err("hour 25");
        assert_eq!(e.field(), Some(Field::Hour));
        assert_eq!(e.position(), Some(5));
        assert_eq!(e.kind(), &ScheduleErrorKind::OutOfRange { min: 0, max: 23 });
        assert_eq!(e.input(), "*/5 25 * * *");
        // Positions count characters, not bytes.
        let e = parse("é").expect_err("not a schedule");
        assert_eq!(e.kind(), &ScheduleErrorKind::FieldCount { found: 1 });
        let e = parse("* * * * * é").expect_err("six fields");
        assert_eq!(e.position(), Some(11));
        let e = parse("0 0 1 1 ＊ x").expect_err("six fields");
        assert_eq!(e.position(), Some(11));
    }
}
