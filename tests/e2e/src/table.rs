//! Renders any query's result as an aligned text table, as psql would.

use anyhow::{Context, Result};
use postgres::SimpleQueryMessage;

/// Runs `sql` (one statement, sent as-is) and renders its rows. The simple query protocol
/// returns every value as text, so any column type prints without per-type code.
pub fn query_table(client: &mut postgres::Client, sql: &str) -> Result<String> {
    let messages = client
        .simple_query(sql)
        .with_context(|| format!("running {sql}"))?;
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                header = columns.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                if header.is_empty() {
                    header = row.columns().iter().map(|c| c.name().to_string()).collect();
                }
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("").to_string())
                        .collect(),
                );
            }
            _ => {}
        }
    }
    Ok(render_table(&header, &rows))
}

/// `header` and `rows` as a psql-style aligned table with a row count footer.
pub fn render_table(header: &[String], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| s.replace('\n', "\\n");
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(clean(cell).chars().count());
            }
        }
    }
    // As psql does, numbers line up on the right; a column is numeric when every value is.
    let numeric: Vec<bool> = (0..widths.len())
        .map(|i| {
            let mut values = rows
                .iter()
                .filter_map(|r| r.get(i))
                .filter(|c| !c.is_empty())
                .peekable();
            values.peek().is_some() && values.all(|c| c.parse::<f64>().is_ok())
        })
        .collect();
    let line = |cells: &[String], is_header: bool| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = clean(c);
                let pad = " ".repeat(
                    widths
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(c.chars().count()),
                );
                if !is_header && numeric.get(i).copied().unwrap_or(false) {
                    format!("{pad}{c}")
                } else {
                    format!("{c}{pad}")
                }
            })
            .collect();
        format!(" {}", padded.join(" | ")).trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(header, true));
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w + 2)).collect();
    out.push_str(&rule.join("+"));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row, false));
        out.push('\n');
    }
    out.push_str(&format!(
        "({} row{})\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::render_table;

    #[test]
    fn aligns_columns_and_counts_rows() {
        let header = vec!["status".to_string(), "count".to_string()];
        let rows = vec![
            vec!["completed".to_string(), "36".to_string()],
            vec!["pending".to_string(), "".to_string()],
        ];
        let text = render_table(&header, &rows);
        assert_eq!(
            text,
            " status    | count\n-----------+-------\n completed |    36\n pending   |\n(2 rows)\n"
        );
    }
}
