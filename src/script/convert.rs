//! Row values ⇄ JavaScript values, directly through the engine's API (no JSON text).
//!
//! Into JavaScript: numbers become strings holding their exact text; JSON documents become
//! objects/arrays, numbers inside them numbers where a double prints the same value and
//! strings of their exact text where none does ([`super::exact`]); SQL arrays become arrays.
//! Out of JavaScript: strings, booleans and null as themselves; a number becomes its decimal
//! text; a `Date` its ISO string; a BigInt its digits; an object a JSON document; an array a
//! SQL array. Functions, symbols and `undefined` where a value is needed are errors.

use rquickjs::convert::Coerced;
use rquickjs::{Array, Atom, Ctx, FromJs, Function, Object, Type, Value as JsValue};

use super::host::{RowOp, TargetColumn};
use super::{Meta, Routed};
use crate::types::{Row, Value, new_row};

/// Property names of a `meta` object Rust sets; others are passed through untouched.
const META_SCHEMA: &str = "schema";
const META_TABLE: &str = "table";

pub(crate) fn value_to_js<'js>(ctx: &Ctx<'js>, value: &Value) -> rquickjs::Result<JsValue<'js>> {
    Ok(match value {
        Value::Null => JsValue::new_null(ctx.clone()),
        Value::Bool(b) => JsValue::new_bool(ctx.clone(), *b),
        Value::Number(s) | Value::String(s) => {
            rquickjs::String::from_str(ctx.clone(), s)?.into_value()
        }
        // A document that is a bare number arrives as its exact text, as column numbers do.
        Value::Json(serde_json::Value::Number(n)) => {
            rquickjs::String::from_str(ctx.clone(), n.as_str())?.into_value()
        }
        Value::Json(j) => json_to_js(ctx, j)?,
        // The document (or, if the text is not one after all, the text).
        Value::JsonText(_) => match value.to_json() {
            serde_json::Value::Number(n) => {
                rquickjs::String::from_str(ctx.clone(), n.as_str())?.into_value()
            }
            document => json_to_js(ctx, &document)?,
        },
        Value::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, value_to_js(ctx, item)?)?;
            }
            array.into_value()
        }
    })
}

fn json_to_js<'js>(ctx: &Ctx<'js>, json: &serde_json::Value) -> rquickjs::Result<JsValue<'js>> {
    Ok(match json {
        serde_json::Value::Null => JsValue::new_null(ctx.clone()),
        serde_json::Value::Bool(b) => JsValue::new_bool(ctx.clone(), *b),
        serde_json::Value::Number(n) => match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => JsValue::new_int(ctx.clone(), i),
            // A number no double holds as it is written arrives as its exact text.
            None => match super::exact::js_number(n.as_str()) {
                Some(f) => JsValue::new_float(ctx.clone(), f),
                None => rquickjs::String::from_str(ctx.clone(), n.as_str())?.into_value(),
            },
        },
        serde_json::Value::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        serde_json::Value::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, json_to_js(ctx, item)?)?;
            }
            array.into_value()
        }
        serde_json::Value::Object(map) => {
            let object = Object::new(ctx.clone())?;
            for (k, v) in map {
                object.set(k.as_str(), json_to_js(ctx, v)?)?;
            }
            object.into_value()
        }
    })
}

pub(crate) fn row_to_js<'js>(ctx: &Ctx<'js>, row: &Row) -> rquickjs::Result<Object<'js>> {
    let object = Object::new(ctx.clone())?;
    for (column, value) in row {
        object.set(&**column, value_to_js(ctx, value)?)?;
    }
    Ok(object)
}

/// Builds the JavaScript rows and metas of one batch. Rows of a batch mostly share their
/// columns and meta, so property-name atoms and meta strings are made once and reused.
pub(crate) struct BatchEncoder<'js> {
    ctx: Ctx<'js>,
    atoms: Vec<(String, Atom<'js>)>,
    last_meta: Option<(Meta, [JsValue<'js>; 4])>,
}

impl<'js> BatchEncoder<'js> {
    pub(crate) fn new(ctx: &Ctx<'js>) -> Self {
        Self { ctx: ctx.clone(), atoms: Vec::new(), last_meta: None }
    }

    /// The atom for a column name: row `i`'s column `n` usually sits at the same position.
    fn atom(&mut self, position: usize, name: &str) -> rquickjs::Result<Atom<'js>> {
        if let Some((cached, atom)) = self.atoms.get(position)
            && cached == name
        {
            return Ok(atom.clone());
        }
        if let Some((_, atom)) = self.atoms.iter().find(|(cached, _)| cached == name) {
            return Ok(atom.clone());
        }
        let atom = Atom::from_str(self.ctx.clone(), name)?;
        self.atoms.push((name.to_owned(), atom.clone()));
        Ok(atom)
    }

    pub(crate) fn row(&mut self, row: &Row) -> rquickjs::Result<Object<'js>> {
        let object = Object::new(self.ctx.clone())?;
        for (position, (column, value)) in row.iter().enumerate() {
            let atom = self.atom(position, column)?;
            object.set(atom, value_to_js(&self.ctx, value)?)?;
        }
        Ok(object)
    }

    pub(crate) fn meta(&mut self, meta: &Meta, with_before: bool) -> rquickjs::Result<Object<'js>> {
        let reuse = matches!(&self.last_meta, Some((last, _)) if last.schema == meta.schema
            && last.table == meta.table && last.source == meta.source && last.time == meta.time);
        if !reuse {
            let text =
                |s: &str| rquickjs::String::from_str(self.ctx.clone(), s).map(|v| v.into_value());
            let (nanos, logical) = meta
                .time
                .map_or((String::new(), String::new()), |(n, l)| (n.to_string(), l.to_string()));
            let values = [text(&meta.schema)?, text(&meta.table)?, text(&nanos)?, text(&logical)?];
            let key = Meta { before: None, ..meta.clone() };
            self.last_meta = Some((key, values));
        }
        let Some((_, [schema, table, nanos, logical])) = &self.last_meta else {
            unreachable!("set above");
        };
        let object = Object::new(self.ctx.clone())?;
        object.set(META_SCHEMA, schema.clone())?;
        object.set(META_TABLE, table.clone())?;
        if let Some(tag) = meta.source {
            object.set(tag.name(), true)?;
        }
        if meta.time.is_some() {
            object.set("nanos", nanos.clone())?;
            object.set("logical", logical.clone())?;
        }
        if with_before {
            match &meta.before {
                Some(before) => object.set("before", row_to_js(&self.ctx, before)?)?,
                None => object.set("before", JsValue::new_null(self.ctx.clone()))?,
            }
        }
        Ok(object)
    }
}

pub(crate) fn strings_to_js<'js>(ctx: &Ctx<'js>, items: &[String]) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, item) in items.iter().enumerate() {
        array.set(i, item.as_str())?;
    }
    Ok(array)
}

pub(crate) fn meta_to_js<'js>(
    ctx: &Ctx<'js>,
    meta: &Meta,
    with_before: bool,
) -> rquickjs::Result<Object<'js>> {
    let object = Object::new(ctx.clone())?;
    object.set(META_SCHEMA, meta.schema.as_str())?;
    object.set(META_TABLE, meta.table.as_str())?;
    if let Some(tag) = meta.source {
        object.set(tag.name(), true)?;
    }
    if let Some((nanos, logical)) = meta.time {
        object.set("nanos", nanos.to_string())?;
        object.set("logical", logical.to_string())?;
    }
    if with_before {
        match &meta.before {
            Some(before) => object.set("before", row_to_js(ctx, before)?)?,
            None => object.set("before", JsValue::new_null(ctx.clone()))?,
        }
    }
    Ok(object)
}

pub(crate) fn ops_to_js<'js>(ctx: &Ctx<'js>, ops: &[RowOp]) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, op) in ops.iter().enumerate() {
        let object = Object::new(ctx.clone())?;
        object.set("action", op.action())?;
        if let Some(data) = &op.data {
            object.set("data", row_to_js(ctx, data)?)?;
        }
        if let Some(before) = &op.before {
            object.set("before", row_to_js(ctx, before)?)?;
        }
        object.set("meta", meta_to_js(ctx, &op.meta, false)?)?;
        object.set("pk", strings_to_js(ctx, &op.pk)?)?;
        array.set(i, object)?;
    }
    Ok(array)
}

pub(crate) fn columns_to_js<'js>(
    ctx: &Ctx<'js>,
    columns: &[TargetColumn],
) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, c) in columns.iter().enumerate() {
        let object = Object::new(ctx.clone())?;
        object.set("name", c.name.as_str())?;
        object.set("primary", c.primary)?;
        object.set("ignored", c.ignored)?;
        object.set("type", c.type_name.as_str())?;
        if let Some(default) = &c.default_expr {
            object.set("defaultExpr", default.as_str())?;
        }
        array.set(i, object)?;
    }
    Ok(array)
}

// ---------------------------------------------------------------------------------------------

/// Converts JavaScript values back; holds what is needed to recognise a `Date`.
pub(crate) struct FromJsConverter<'js> {
    ctx: Ctx<'js>,
    date: JsValue<'js>,
}

impl<'js> FromJsConverter<'js> {
    pub(crate) fn new(ctx: &Ctx<'js>) -> rquickjs::Result<Self> {
        Ok(Self { ctx: ctx.clone(), date: ctx.globals().get("Date")? })
    }

    /// A number's text as JavaScript's `String(n)` writes it.
    fn number_text(&self, value: &JsValue<'js>) -> Result<String, String> {
        if let Some(i) = value.as_int() {
            return Ok(i.to_string());
        }
        Coerced::<String>::from_js(&self.ctx, value.clone())
            .map(|c| c.0)
            .map_err(|e| format!("cannot read a number: {e}"))
    }

    /// A column value. `what` names it in errors (`column "total"`).
    pub(crate) fn value(
        &self,
        value: JsValue<'js>,
        what: &dyn Fn() -> String,
    ) -> Result<Value, String> {
        match value.type_of() {
            Type::Null => Ok(Value::Null),
            Type::Bool => Ok(Value::Bool(value.as_bool().unwrap_or(false))),
            Type::Int | Type::Float => Ok(Value::Number(self.number_text(&value)?)),
            Type::BigInt => Ok(Value::Number(self.number_text(&value)?)),
            Type::String => Ok(Value::String(js_string(&value)?)),
            Type::Array => {
                let array = value.into_array().ok_or("not an array")?;
                let mut items = Vec::with_capacity(array.len());
                for item in array.iter::<JsValue>() {
                    items.push(self.value(item.map_err(|e| e.to_string())?, what)?);
                }
                Ok(Value::Array(items))
            }
            Type::Object | Type::Exception => {
                let object = value.into_object().ok_or("not an object")?;
                if object.is_instance_of(&self.date) {
                    let iso: Function = object.get("toISOString").map_err(|e| e.to_string())?;
                    let text: String = iso
                        .call((rquickjs::function::This(object.clone()),))
                        .map_err(|_| format!("{} is an invalid Date", what()))?;
                    return Ok(Value::String(text));
                }
                Ok(Value::Json(self.json(object.into_value(), what)?))
            }
            Type::Undefined | Type::Uninitialized => {
                Err(format!("{} is undefined (use null for SQL NULL)", what()))
            }
            other => Err(format!("{} is a {other}, which cannot be stored", what())),
        }
    }

    /// A JSON document (values nested in a JSON column).
    fn json(
        &self,
        value: JsValue<'js>,
        what: &dyn Fn() -> String,
    ) -> Result<serde_json::Value, String> {
        Ok(match value.type_of() {
            Type::Null | Type::Undefined => serde_json::Value::Null,
            Type::Bool => serde_json::Value::Bool(value.as_bool().unwrap_or(false)),
            Type::Int => serde_json::Value::from(value.as_int().unwrap_or(0)),
            Type::Float => {
                // JavaScript's own rendering (12345678901234567000, not 1.2345678901234567e19),
                // kept as the number's text.
                let text = self.number_text(&value)?;
                text.parse::<serde_json::Number>()
                    .map(serde_json::Value::Number)
                    .map_err(|_| format!("{} holds {text}, which JSON cannot represent", what()))?
            }
            Type::BigInt => serde_json::Value::String(self.number_text(&value)?),
            Type::String => serde_json::Value::String(js_string(&value)?),
            Type::Array => {
                let array = value.into_array().ok_or("not an array")?;
                let mut items = Vec::with_capacity(array.len());
                for item in array.iter::<JsValue>() {
                    items.push(self.json(item.map_err(|e| e.to_string())?, what)?);
                }
                serde_json::Value::Array(items)
            }
            Type::Object | Type::Exception => {
                let object = value.into_object().ok_or("not an object")?;
                if object.is_instance_of(&self.date) {
                    return match self.value(object.into_value(), what)? {
                        Value::String(s) => Ok(serde_json::Value::String(s)),
                        _ => Err(format!("{} holds an invalid Date", what())),
                    };
                }
                let mut map = serde_json::Map::new();
                for prop in object.props::<String, JsValue>() {
                    let (key, item) = prop.map_err(|e| e.to_string())?;
                    if item.is_undefined() {
                        continue;
                    }
                    map.insert(key, self.json(item, what)?);
                }
                serde_json::Value::Object(map)
            }
            other => {
                return Err(format!("{} holds a {other}, which JSON cannot represent", what()));
            }
        })
    }

    /// A row object: properties whose value is `undefined` are left out.
    pub(crate) fn row(&self, value: JsValue<'js>, what: &str) -> Result<Row, String> {
        let object = match value.type_of() {
            Type::Object => value.into_object().ok_or("not an object")?,
            Type::Undefined => {
                return Err(format!("{what} returned undefined: return a row, or null to drop it"));
            }
            other => {
                return Err(format!("{what} returned a {other} where a row object was expected"));
            }
        };
        let props = collect_props(&object)?;
        self.row_from_props(props)
    }

    fn row_from_props(&self, props: Vec<(String, JsValue<'js>)>) -> Result<Row, String> {
        let mut row = new_row(props.len());
        for (column, item) in props {
            if item.is_undefined() {
                continue;
            }
            let v = self.value(item, &|| format!("column {column:?}"))?;
            row.insert(column.into(), v);
        }
        Ok(row)
    }

    /// What a schema-level handler returned: a row (default table), a routing object
    /// `{table: rows[]}` (every property an array of objects; `{}` routes nowhere), or null.
    pub(crate) fn routed(
        &self,
        value: JsValue<'js>,
        default_table: &str,
        what: &str,
    ) -> Result<Routed, String> {
        if value.is_null() {
            return Ok(Routed::Dropped);
        }
        if value.type_of() != Type::Object {
            return Ok(Routed::Rows(vec![(default_table.to_owned(), self.row(value, what)?)]));
        }
        let object = value.into_object().ok_or("not an object")?;
        let props = collect_props(&object)?;
        let routing = props.iter().all(|(_, v)| {
            v.as_array().is_some_and(|a| {
                a.iter::<JsValue>().all(|item| item.is_ok_and(|i| i.type_of() == Type::Object))
            })
        });
        if !routing {
            return Ok(Routed::Rows(vec![(default_table.to_owned(), self.row_from_props(props)?)]));
        }
        let mut rows = Vec::new();
        for (table, array) in props {
            let array = array.into_array().ok_or("not an array")?;
            for item in array.iter::<JsValue>() {
                let row = self.row(
                    item.map_err(|e| e.to_string())?,
                    &format!("{what} for table {table:?}"),
                )?;
                rows.push((table.clone(), row));
            }
        }
        Ok(Routed::Rows(rows))
    }

    /// What a table-level delete handler returned: key values, or null.
    pub(crate) fn key(
        &self,
        value: JsValue<'js>,
        arity: usize,
        what: &str,
    ) -> Result<Option<Vec<String>>, String> {
        if value.is_null() {
            return Ok(None);
        }
        let key = self.strings(value, what)?;
        if key.is_empty() {
            return Ok(None);
        }
        if key.len() != arity {
            return Err(format!(
                "{what} returned {} key values, but the primary key has {arity} columns",
                key.len()
            ));
        }
        Ok(Some(key))
    }

    /// An array of non-null values as text (key values).
    fn strings(&self, value: JsValue<'js>, what: &str) -> Result<Vec<String>, String> {
        let Some(array) = value.as_array() else {
            return Err(format!(
                "{what} returned a {} where an array of key values (or null) was expected",
                value.type_of()
            ));
        };
        let mut out = Vec::with_capacity(array.len());
        for item in array.iter::<JsValue>() {
            let item = item.map_err(|e| e.to_string())?;
            match self.value(item, &|| format!("{what}'s key value"))? {
                Value::Null => return Err(format!("{what} returned a key holding null")),
                v => out.push(v.as_key_text().unwrap_or_default()),
            }
        }
        Ok(out)
    }

    /// Operations handed to `write()` / `getTX().apply()`.
    pub(crate) fn ops(&self, value: JsValue<'js>) -> Result<Vec<RowOp>, String> {
        let array = value
            .into_array()
            .ok_or("write() expects an array of row operations (the rows onWrite received)")?;
        let mut ops = Vec::with_capacity(array.len());
        for (i, item) in array.iter::<Object>().enumerate() {
            let op =
                item.map_err(|_| format!("write(): element {i} is not a row operation object"))?;
            let action: String = op.get("action").map_err(|_| {
                format!("write(): element {i} has no action (\"upsert\" or \"delete\")")
            })?;
            let data = match action.as_str() {
                "upsert" => Some(self.row(
                    op.get("data").map_err(|e| e.to_string())?,
                    &format!("write(): element {i}'s data"),
                )?),
                "delete" => None,
                other => {
                    return Err(format!(
                        "write(): element {i} has action {other:?}, expected \"upsert\" or \"delete\""
                    ));
                }
            };
            let before: JsValue = op.get("before").map_err(|e| e.to_string())?;
            let before = match before.type_of() {
                Type::Null | Type::Undefined => None,
                _ => Some(self.row(before, &format!("write(): element {i}'s before"))?),
            };
            let pk: JsValue = op.get("pk").map_err(|e| e.to_string())?;
            let pk = match pk.type_of() {
                Type::Undefined | Type::Null => Vec::new(),
                _ => self.strings(pk, &format!("write(): element {i}'s pk"))?,
            };
            let meta = self.meta(op.get("meta").map_err(|e| e.to_string())?);
            ops.push(RowOp { data, before, meta, pk });
        }
        Ok(ops)
    }

    fn meta(&self, value: JsValue<'js>) -> Meta {
        let Some(object) = value.as_object() else {
            return Meta::default();
        };
        let text =
            |key: &str| object.get::<_, Option<Coerced<String>>>(key).ok().flatten().map(|c| c.0);
        let time = match (
            text("nanos").and_then(|n| n.parse().ok()),
            text("logical").and_then(|l| l.parse().ok()),
        ) {
            (Some(n), Some(l)) => Some((n, l)),
            _ => None,
        };
        Meta {
            schema: text(META_SCHEMA).unwrap_or_default(),
            table: text(META_TABLE).unwrap_or_default(),
            source: None,
            time,
            before: None,
        }
    }
}

/// An object's own enumerable properties, in JavaScript's order.
fn collect_props<'js>(object: &Object<'js>) -> Result<Vec<(String, JsValue<'js>)>, String> {
    let mut props = Vec::with_capacity(object.len());
    for prop in object.props::<String, JsValue>() {
        props.push(prop.map_err(|e| e.to_string())?);
    }
    Ok(props)
}

fn js_string(value: &JsValue<'_>) -> Result<String, String> {
    value
        .as_string()
        .ok_or_else(|| "not a string".to_owned())?
        .to_string()
        .map_err(|e| e.to_string())
}
