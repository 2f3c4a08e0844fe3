//! How console results look: Rhai values as readable text (maps as
//! `#{key: value}`, arrays of maps as aligned tables, pids as `#PID<0.N.0>`)
//! and as JSON for `system rpc --json`; `help()` as its text.
//!
//! Pure formatting: it must not evaluate anything or reach the node.

use rhai::{Array, Dynamic, Map};
use serde_json::{Value, json};

use super::help::{self, Help};
use super::tree::TreeText;
use system_runtime::Pid;

/// Inline forms longer than this are broken over several lines.
const LINE_WIDTH: usize = 80;

/// The value as the console prints it.
/// Items of a long list that the text form shows.
pub const SHOWN: usize = 100;

pub fn text(value: &Dynamic) -> String {
    if value.is::<Help>() {
        return help::TEXT.to_owned();
    }
    if let Some(tree) = value.clone().try_cast::<TreeText>() {
        return tree.0;
    }
    if let Ok(array) = value.as_array_ref()
        && array.len() > SHOWN
    {
        // Like IEx, a long list prints its head; `value` (JSON) has it all.
        let total = array.len();
        let head: Array = array.iter().take(SHOWN).cloned().collect();
        return format!(
            "{}\n... {} more ({total} in all)",
            text(&Dynamic::from_array(head)),
            total - SHOWN
        );
    }
    let value = value.clone().flatten();
    if let Some(rows) = table_rows(&value) {
        return table(&rows);
    }
    block(&value, 0)
}

/// The value as JSON: `()` is `null`, pids are their display strings.
pub fn json(value: &Dynamic) -> Value {
    let value = value.clone().flatten();
    if value.is_unit() {
        return Value::Null;
    }
    if let Some(pid) = value.clone().try_cast::<Pid>() {
        return json!(pid.to_string());
    }
    if value.is::<Help>() {
        return json!(help::TEXT);
    }
    if let Some(tree) = value.clone().try_cast::<TreeText>() {
        return json!(tree.0);
    }
    if let Ok(flag) = value.as_bool() {
        return json!(flag);
    }
    if let Ok(int) = value.as_int() {
        return json!(int);
    }
    if let Ok(float) = value.as_float() {
        return json!(float);
    }
    if value.is_string() {
        return json!(value.to_string());
    }
    if let Some(array) = value.clone().try_cast::<Array>() {
        return Value::Array(array.iter().map(json).collect());
    }
    if let Some(map) = value.clone().try_cast::<Map>() {
        return Value::Object(map.iter().map(|(k, v)| (k.to_string(), json(v))).collect());
    }
    json!(value.to_string())
}

/// One value on one line, as it appears inside a map, an array or a table.
fn inline(value: &Dynamic) -> String {
    let value = value.clone().flatten();
    if value.is_unit() {
        return "()".to_owned();
    }
    if let Some(pid) = value.clone().try_cast::<Pid>() {
        return pid.to_string();
    }
    if value.is_string() {
        return format!("{:?}", value.to_string());
    }
    if let Some(array) = value.clone().try_cast::<Array>() {
        let items: Vec<String> = array.iter().map(inline).collect();
        return format!("[{}]", items.join(", "));
    }
    if let Some(map) = value.clone().try_cast::<Map>() {
        let items: Vec<String> = map
            .iter()
            .map(|(key, value)| format!("{}: {}", key_text(key), inline(value)))
            .collect();
        return format!("#{{{}}}", items.join(", "));
    }
    value.to_string()
}

/// Like [`inline`], but arrays and maps too long for a line get one item per line.
fn block(value: &Dynamic, indent: usize) -> String {
    let one_line = inline(value);
    if one_line.len() + indent <= LINE_WIDTH {
        return one_line;
    }
    let pad = " ".repeat(indent + 4);
    let close = " ".repeat(indent);
    if let Some(array) = value.clone().try_cast::<Array>() {
        let items: Vec<String> = array
            .iter()
            .map(|item| format!("{pad}{},", block(item, indent + 4)))
            .collect();
        return format!("[\n{}\n{close}]", items.join("\n"));
    }
    if let Some(map) = value.clone().try_cast::<Map>() {
        let items: Vec<String> = map
            .iter()
            .map(|(key, item)| format!("{pad}{}: {},", key_text(key), block(item, indent + 4)))
            .collect();
        return format!("#{{\n{}\n{close}}}", items.join("\n"));
    }
    one_line
}

fn key_text(key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_alphanumeric() || c == '_');
    if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// The rows of a non-empty array whose items are all maps.
fn table_rows(value: &Dynamic) -> Option<Vec<Map>> {
    let array = value.clone().try_cast::<Array>()?;
    if array.is_empty() {
        return None;
    }
    array
        .into_iter()
        .map(|item| item.flatten().try_cast::<Map>())
        .collect()
}

/// Columns: `pid` and `name` first, the other keys in order; numbers right-aligned.
fn table(rows: &[Map]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        for key in row.keys() {
            if !columns.iter().any(|c| c == key.as_str()) {
                columns.push(key.to_string());
            }
        }
    }
    columns.sort_by_key(|c| match c.as_str() {
        "pid" => 0,
        "name" => 1,
        _ => 2,
    });
    let cell = |row: &Map, column: &str| -> (String, bool) {
        match row.get(column) {
            None => (String::new(), false),
            Some(value) => {
                let value = value.clone().flatten();
                let numeric = value.is_int() || value.is_float();
                let text = if value.is_string() {
                    value.to_string()
                } else {
                    inline(&value)
                };
                (text, numeric)
            }
        }
    };
    let cells: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(row, c)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].0.chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..columns.len())
        .map(|i| cells.iter().all(|r| r[i].1 || r[i].0.is_empty()))
        .collect();
    let line = |texts: Vec<&str>| -> String {
        let parts: Vec<String> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if numeric[i] {
                    format!("{t:>width$}", width = widths[i])
                } else {
                    format!("{t:<width$}", width = widths[i])
                }
            })
            .collect();
        parts.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(columns.iter().map(String::as_str).collect())];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    for row in &cells {
        out.push(line(row.iter().map(|(t, _)| t.as_str()).collect()));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_prints_its_head_and_counts_the_rest() {
        let long: Array = (0..150).map(Dynamic::from_int).collect();
        let printed = text(&Dynamic::from_array(long.clone()));
        assert!(printed.ends_with("... 50 more (150 in all)"), "{printed}");
        assert!(printed.contains("99,"), "{printed}");
        assert!(!printed.contains("100,"), "{printed}");
        assert_eq!(
            json(&Dynamic::from_array(long)).as_array().map(Vec::len),
            Some(150)
        );
    }

    #[test]
    fn prints_pids_maps_and_tables() {
        assert_eq!(text(&Dynamic::from(Pid(7))), "#PID<0.7.0>");
        let mut map = Map::new();
        map.insert("pid".into(), Dynamic::from(Pid(7)));
        map.insert("name".into(), Dynamic::from("sum"));
        map.insert("cpu".into(), Dynamic::from(99.5_f64));
        assert_eq!(
            text(&Dynamic::from(map.clone())),
            "#{cpu: 99.5, name: \"sum\", pid: #PID<0.7.0>}"
        );
        let rows: Array = vec![Dynamic::from(map)];
        let table = text(&Dynamic::from(rows));
        assert_eq!(table.lines().next(), Some("pid          name   cpu"));
        assert!(table.contains("#PID<0.7.0>  sum   99.5"), "{table}");
        assert_eq!(json(&Dynamic::from(Pid(7))), json!("#PID<0.7.0>"));
        assert_eq!(json(&Dynamic::UNIT), Value::Null);
    }
}
