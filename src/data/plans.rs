//! Plans kept for the life of a backend. The statements a sync runs for every page and
//! every listing are parsed and analysed once per worker instead of on every call, which is
//! most of what a small page costs the main thread. Postgres re-plans a kept plan by itself
//! when a table it uses changes.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiResult, SpiTupleTable};
use pgrx::PgOid;

thread_local! {
    static KEPT: RefCell<HashMap<&'static str, OwnedPreparedStatement>> =
        RefCell::new(HashMap::new());
}

/// Runs `sql` with `args` through its kept plan (prepared on first use, with the argument
/// types of that call) and hands the result to `read`.
pub fn run_kept<R>(
    sql: &'static str,
    args: &[DatumWithOid],
    read: impl FnOnce(SpiTupleTable) -> SpiResult<R>,
) -> SpiResult<R> {
    Spi::connect_mut(|client| {
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            if !kept.contains_key(sql) {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                let plan = client.prepare_mut(sql, &types)?.keep();
                kept.insert(sql, plan);
            }
            let table = client.update(&kept[sql], None, args)?;
            read(table)
        })
    })
}

/// The first row's first column, as `Spi::get_one_with_args` reads it.
pub fn get_one_kept<A: FromDatum + IntoDatum>(
    sql: &'static str,
    args: &[DatumWithOid],
) -> SpiResult<Option<A>> {
    run_kept(sql, args, |table| table.first().get_one::<A>())
}

/// The first row's first two columns, as `Spi::get_two_with_args` reads them.
pub fn get_two_kept<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    sql: &'static str,
    args: &[DatumWithOid],
) -> SpiResult<(Option<A>, Option<B>)> {
    run_kept(sql, args, |table| table.first().get_two::<A, B>())
}
