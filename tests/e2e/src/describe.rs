//! What the upgrade tests compare: a text description of every object the extension owns,
//! and a fingerprint of every row its tables hold. Two databases whose descriptions are
//! equal offer the same schema to every query, grant and policy; two equal fingerprints
//! hold the same rows.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use postgres::GenericClient;

/// One query per kind of object; each yields one line per object, keyed by its kind and
/// name so that a difference reads as "this column's default", not as a shifted list. The
/// extension's objects are its members in `pg_depend` and what hangs off its tables
/// (columns, constraints, indexes, triggers, policies).
const DESCRIBE: &[&str] = &[
    // The extension itself, and which tables pg_dump treats as configuration.
    "SELECT format('extension version=%s relocatable=%s schema=%s config=%s',
            e.extversion, e.extrelocatable, e.extnamespace::regnamespace,
            (SELECT coalesce(string_agg(c::regclass::text, ',' ORDER BY c::regclass::text), '')
             FROM unnest(e.extconfig) c))
     FROM pg_extension e WHERE e.extname = 'procore_sync'",
    // Every member object, whatever its kind (types, casts, event triggers included).
    "SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
     FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND e.extname = 'procore_sync'",
    "WITH members AS (
        SELECT d.objid AS oid FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
        WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
          AND d.classid = 'pg_class'::regclass AND e.extname = 'procore_sync')
     SELECT format('relation %s kind=%s persistence=%s rls=%s force_rls=%s options=%s acl=%s comment=%s',
            c.oid::regclass, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
            c.reloptions, c.relacl, obj_description(c.oid, 'pg_class'))
     FROM pg_class c JOIN members m ON m.oid = c.oid",
    // Columns with their position among live columns, so `SELECT *` is compared too.
    "WITH members AS (
        SELECT d.objid AS oid FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid
        WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
          AND d.classid = 'pg_class'::regclass AND e.extname = 'procore_sync')
     SELECT format('column %s.%s position=%s type=%s not_null=%s default=%s identity=%s generated=%s collation=%s acl=%s',
            a.attrelid::regclass, a.attname,
            row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
            format_type(a.atttypid, a.atttypmod), a.attnotnull,
            pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
            CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END, a.attacl)
     FROM pg_attribute a JOIN members m ON m.oid = a.attrelid
     LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped",
    "SELECT format('constraint %s.%s %s deferrable=%s deferred=%s',
            con.conrelid::regclass, con.conname, pg_get_constraintdef(con.oid),
            con.condeferrable, con.condeferred)
     FROM pg_constraint con
     JOIN pg_depend d ON d.objid = con.conrelid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'",
    "SELECT format('index %s %s', i.indexrelid::regclass, pg_get_indexdef(i.indexrelid))
     FROM pg_index i
     JOIN pg_depend d ON d.objid = i.indrelid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'",
    "SELECT format('trigger %s.%s %s enabled=%s', t.tgrelid::regclass, t.tgname,
            pg_get_triggerdef(t.oid), t.tgenabled)
     FROM pg_trigger t
     JOIN pg_depend d ON d.objid = t.tgrelid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'
     WHERE NOT t.tgisinternal",
    "SELECT format('policy %s.%s cmd=%s permissive=%s roles=%s using=%s check=%s',
            p.polrelid::regclass, p.polname, p.polcmd, p.polpermissive,
            (SELECT string_agg(CASE r WHEN 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1)
             FROM unnest(p.polroles) r),
            pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
     FROM pg_policy p
     JOIN pg_depend d ON d.objid = p.polrelid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'",
    "SELECT format('view %s %s', c.oid::regclass, pg_get_viewdef(c.oid))
     FROM pg_class c
     JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'
     WHERE c.relkind IN ('v', 'm')",
    "SELECT format('sequence %s type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
            s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin,
            s.seqmax, s.seqcache, s.seqcycle,
            (SELECT od.refobjid::regclass || '.' || a.attname FROM pg_depend od
             JOIN pg_attribute a ON a.attrelid = od.refobjid AND a.attnum = od.refobjsubid
             WHERE od.objid = s.seqrelid AND od.classid = 'pg_class'::regclass AND od.deptype IN ('a', 'i')))
     FROM pg_sequence s
     JOIN pg_depend d ON d.objid = s.seqrelid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'",
    // Functions: signature, result, language, C symbol or body, volatility, strictness,
    // SECURITY DEFINER, parallel safety, search_path and other SET clauses, grants.
    "SELECT format('function %s(%s) returns %s language=%s kind=%s volatile=%s strict=%s security_definer=%s parallel=%s leakproof=%s cost=%s rows=%s config=%s acl=%s library=%s body=%s comment=%s',
            p.oid::regproc, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
            l.lanname, p.prokind, p.provolatile, p.proisstrict, p.prosecdef, p.proparallel,
            p.proleakproof, p.procost, p.prorows, p.proconfig, p.proacl, p.probin, p.prosrc,
            obj_description(p.oid, 'pg_proc'))
     FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
     JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'",
    "SELECT format('type %s kind=%s labels=%s', t.oid::regtype, t.typtype,
            (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid))
     FROM pg_type t
     JOIN pg_depend d ON d.objid = t.oid AND d.classid = 'pg_type'::regclass AND d.deptype = 'e'
     JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'",
    // The settings the library registers (the same library serves both databases, so this
    // guards against a test comparing databases of two different servers).
    "SELECT format('setting %s context=%s type=%s unit=%s min=%s max=%s enum=%s default=%s',
            name, context, vartype, unit, min_val, max_val, enumvals, boot_val)
     FROM pg_settings WHERE name LIKE 'procore\\_sync.%'",
];

/// Every line of the description, sorted.
pub fn describe_extension(client: &mut impl GenericClient) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for query in DESCRIBE {
        for row in client
            .query(*query, &[])
            .with_context(|| format!("describing the extension: {query}"))?
        {
            lines.push(row.get::<_, Option<String>>(0).unwrap_or_default());
        }
    }
    lines.sort();
    Ok(lines)
}

/// The lines only one side has, `-` for the first and `+` for the second; empty when equal.
pub fn description_diff(expected: &[String], actual: &[String]) -> Vec<String> {
    let expected_set: std::collections::BTreeSet<&String> = expected.iter().collect();
    let actual_set: std::collections::BTreeSet<&String> = actual.iter().collect();
    let mut diff: Vec<String> = expected_set
        .difference(&actual_set)
        .map(|l| format!("- {l}"))
        .chain(
            actual_set
                .difference(&expected_set)
                .map(|l| format!("+ {l}")),
        )
        .collect();
    diff.sort_by(|a, b| a[2..].cmp(&b[2..]));
    diff
}

/// A table's rows as counted and hashed over a fixed list of columns, so a later version
/// that adds columns can still be checked against the rows an older one held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRows {
    pub columns: Vec<String>,
    pub count: i64,
    pub md5: String,
}

/// Every table of the extension, over all its current columns.
pub fn fingerprint_rows(client: &mut impl GenericClient) -> Result<BTreeMap<String, TableRows>> {
    let tables = client.query(
        "SELECT c.oid::regclass::text,
                array_agg(quote_ident(a.attname) ORDER BY a.attnum)
         FROM pg_class c
         JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype = 'e'
         JOIN pg_extension e ON d.refobjid = e.oid AND e.extname = 'procore_sync'
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relkind = 'r'
         GROUP BY c.oid",
        &[],
    )?;
    let mut out = BTreeMap::new();
    for row in tables {
        let table: String = row.get(0);
        let columns: Vec<String> = row.get(1);
        let rows = fingerprint_table(client, &table, &columns)?;
        out.insert(table, rows);
    }
    Ok(out)
}

/// The same tables and columns as `before`, read again (inside a transaction too).
pub fn fingerprint_again(
    client: &mut impl GenericClient,
    before: &BTreeMap<String, TableRows>,
) -> Result<BTreeMap<String, TableRows>> {
    before
        .iter()
        .map(|(table, rows)| {
            Ok((
                table.clone(),
                fingerprint_table(client, table, &rows.columns)?,
            ))
        })
        .collect()
}

fn fingerprint_table(
    client: &mut impl GenericClient,
    table: &str,
    columns: &[String],
) -> Result<TableRows> {
    // Names come from the catalog (regclass text and quote_ident), never from input.
    let row_expr = format!("ROW({})::text", columns.join(", "));
    let query = format!(
        "SELECT count(*), coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), '')
         FROM (SELECT {row_expr} AS r FROM {table}) t"
    );
    let row = client
        .query_one(&query, &[])
        .with_context(|| format!("fingerprinting {table}"))?;
    Ok(TableRows {
        columns: columns.to_vec(),
        count: row.get(0),
        md5: row.get(1),
    })
}
