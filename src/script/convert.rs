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
use super::{Meta, Routed, SourceTag};
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
        Value::JsonText(_) => document_to_js(ctx, &value.to_json())?,
        Value::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                array.set(i, value_to_js(ctx, item)?)?;
            }
            array.into_value()
        }
    })
}

/// A JSON column's document; one that is a bare number arrives as its exact text, as column
/// numbers do.
fn document_to_js<'js>(
    ctx: &Ctx<'js>,
    document: &serde_json::Value,
) -> rquickjs::Result<JsValue<'js>> {
    match document {
        serde_json::Value::Number(n) => {
            Ok(rquickjs::String::from_str(ctx.clone(), n.as_str())?.into_value())
        }
        document => json_to_js(ctx, document),
    }
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

/// What the rows of a batch were built from, so that a value a handler hands back as it
/// got it is taken from the source row instead of converted again.
///
/// A text value counts when the handler returns the very string it was given: a JavaScript
/// string is immutable, so the same string (one pointer) is the same text, and converting
/// it back would give `Value::String` of that text. Objects and arrays can be changed in
/// place, so identity proves nothing there: a JSON column's document is compared with what
/// the handler returns, and when it holds what the script was given, the source's value is
/// kept (what [`super::exact::keep_source_text`] would make of the converted value).
#[derive(Default)]
pub(crate) struct Inputs<'js> {
    /// Every row's columns in order: the property name (its place in `atoms`) and what its
    /// value was made from.
    columns: Vec<(usize, Noted<'js>)>,
    /// Where each row's columns start in `columns`.
    starts: Vec<usize>,
    /// The column names' atoms ([`BatchEncoder::names_into`]).
    atoms: Vec<Atom<'js>>,
}

impl<'js> Inputs<'js> {
    /// Room for `rows` rows of `columns` columns.
    pub(crate) fn with_capacity(rows: usize, columns: usize) -> Self {
        Self {
            columns: Vec::with_capacity(rows * columns),
            starts: Vec::with_capacity(rows),
            atoms: Vec::new(),
        }
    }

    fn of(&self, row: usize) -> &[(usize, Noted<'js>)] {
        let start = self.starts.get(row).copied().unwrap_or(self.columns.len());
        let end = self.starts.get(row + 1).copied().unwrap_or(self.columns.len());
        &self.columns[start..end]
    }
}

/// What a column's JavaScript value was made from.
enum Noted<'js> {
    /// Nothing to recognise.
    Other,
    /// Text (a number or a string): the string made for it.
    Text(JsValue<'js>),
    /// JSON text, read: the document the script got.
    Document(serde_json::Value),
}

/// A source row and what its JavaScript object was built from (see [`Inputs`]).
pub(crate) struct Source<'a, 'js> {
    row: &'a mut Row,
    columns: &'a [(usize, Noted<'js>)],
    atoms: &'a [Atom<'js>],
    /// Columns already taken by an earlier returned row.
    taken: Vec<bool>,
}

impl<'a, 'js> Source<'a, 'js> {
    /// Row `i` of the batch `inputs` describes.
    pub(crate) fn new(row: &'a mut Row, inputs: &'a Inputs<'js>, i: usize) -> Self {
        let columns = inputs.of(i);
        Self { taken: vec![false; columns.len()], row, columns, atoms: &inputs.atoms }
    }

    /// The source column a returned property names (by its atom), looked up at the same
    /// position first.
    fn column(&self, position: usize, atom: &Atom<'js>) -> Option<usize> {
        let is = |&(a, _): &(usize, Noted<'js>)| self.atoms.get(a) == Some(atom);
        match self.columns.get(position) {
            Some(column) if is(column) => Some(position),
            _ => self.columns.iter().position(is),
        }
    }

    /// The row `cells` describe when it is the only one made from this row: when it has
    /// this row's columns in order (a handler that passes the row on, changed or not), this
    /// row itself with the returned values in place, so nothing is built or hashed again.
    fn build_only(&mut self, cells: Cells) -> Row {
        let in_place = cells.len() == self.row.len()
            && cells.iter().zip(self.row.keys()).enumerate().all(|(k, ((name, cell), key))| {
                std::sync::Arc::ptr_eq(name, key)
                    && match cell {
                        Cell::Taken(c) | Cell::Copied(c) => *c == k,
                        Cell::Converted(_) => true,
                    }
            });
        if !in_place {
            return self.build(cells);
        }
        let mut row = std::mem::take(self.row);
        for ((_, cell), value) in cells.into_iter().zip(row.values_mut()) {
            match cell {
                Cell::Taken(_) => *value = as_returned(std::mem::replace(value, Value::Null)),
                Cell::Copied(_) => {}
                Cell::Converted(converted) => *value = converted,
            }
        }
        row
    }

    /// The row `cells` describe, taking its values from this row.
    fn build(&mut self, cells: Cells) -> Row {
        let mut row = new_row(cells.len());
        for (name, cell) in cells {
            let value = match cell {
                Cell::Converted(value) => value,
                Cell::Copied(c) => self.row.get_index(c).map_or(Value::Null, |(_, v)| v.clone()),
                Cell::Taken(c) => match self.row.get_index_mut(c).map(|(_, v)| v) {
                    Some(v) => as_returned(std::mem::replace(v, Value::Null)),
                    None => unreachable!("the inputs were noted from this row"),
                },
            };
            row.insert(name, value);
        }
        row
    }
}

/// A returned column, before the row is built: a value taken from the source row, a copy of
/// one, or one converted.
enum Cell {
    Taken(usize),
    Copied(usize),
    Converted(Value),
}

/// A text value taken back: what converting the same string back gives, its text as a
/// string.
fn as_returned(value: Value) -> Value {
    match value {
        Value::Number(text) => Value::String(text),
        other => other,
    }
}

/// A returned row, before it is built.
type Cells = Vec<(crate::types::Name, Cell)>;

/// Builds the JavaScript rows and metas of one batch. Rows of a batch mostly share their
/// columns and meta, so property-name atoms and meta strings are made once and reused.
pub(crate) struct BatchEncoder<'js> {
    ctx: Ctx<'js>,
    atoms: Vec<(crate::types::Name, Atom<'js>)>,
    last_meta: Option<(Meta, [JsValue<'js>; 4])>,
    /// `meta`'s property names: schema, table, the source's tag, nanos, logical, before.
    meta_atoms: Option<(Option<SourceTag>, [Atom<'js>; 6])>,
    /// The last meta object made by [`Self::shared_meta`], for the rows that share it.
    shared: Option<Object<'js>>,
}

impl<'js> BatchEncoder<'js> {
    pub(crate) fn new(ctx: &Ctx<'js>) -> Self {
        Self {
            ctx: ctx.clone(),
            atoms: Vec::new(),
            last_meta: None,
            meta_atoms: None,
            shared: None,
        }
    }

    /// The atom for a column name: row `i`'s column `n` usually sits at the same position
    /// (and rows of one table share their names' text: compared by pointer first).
    fn atom(&mut self, position: usize, name: &crate::types::Name) -> rquickjs::Result<Atom<'js>> {
        let i = self.atom_index(position, name)?;
        Ok(self.atoms[i].1.clone())
    }

    /// Where [`Self::atom`]'s atom sits in the cache.
    fn atom_index(
        &mut self,
        position: usize,
        name: &crate::types::Name,
    ) -> rquickjs::Result<usize> {
        let same = |cached: &crate::types::Name| {
            std::sync::Arc::ptr_eq(cached, name) || **cached == **name
        };
        if let Some((cached, _)) = self.atoms.get(position)
            && same(cached)
        {
            return Ok(position);
        }
        if let Some(i) = self.atoms.iter().position(|(cached, _)| same(cached)) {
            return Ok(i);
        }
        let atom = Atom::from_str(self.ctx.clone(), name)?;
        self.atoms.push((name.clone(), atom));
        Ok(self.atoms.len() - 1)
    }

    /// Hands `inputs` the column-name atoms its rows refer to.
    pub(crate) fn names_into(&self, inputs: &mut Inputs<'js>) {
        inputs.atoms = self.atoms.iter().map(|(_, atom)| atom.clone()).collect();
    }

    pub(crate) fn row(&mut self, row: &Row) -> rquickjs::Result<Object<'js>> {
        let object = Object::new(self.ctx.clone())?;
        for (position, (column, value)) in row.iter().enumerate() {
            let atom = self.atom(position, column)?;
            object.set(atom, value_to_js(&self.ctx, value)?)?;
        }
        Ok(object)
    }

    /// [`Self::row`], noting in `inputs` what the row was built from.
    pub(crate) fn row_noted(
        &mut self,
        row: &Row,
        inputs: &mut Inputs<'js>,
    ) -> rquickjs::Result<Object<'js>> {
        let object = Object::new(self.ctx.clone())?;
        inputs.starts.push(inputs.columns.len());
        for (position, (column, value)) in row.iter().enumerate() {
            let index = self.atom_index(position, column)?;
            let atom = self.atoms[index].1.clone();
            let (js, noted) = match value {
                Value::Number(_) | Value::String(_) => {
                    let js = value_to_js(&self.ctx, value)?;
                    (js.clone(), Noted::Text(js))
                }
                // Read once: the script gets the document, and what it returns is compared
                // with the same document.
                Value::JsonText(text) => match crate::types::json::parse(text) {
                    Some(document) => {
                        (document_to_js(&self.ctx, &document)?, Noted::Document(document))
                    }
                    None => (value_to_js(&self.ctx, value)?, Noted::Other),
                },
                _ => (value_to_js(&self.ctx, value)?, Noted::Other),
            };
            inputs.columns.push((index, noted));
            object.set(atom, js)?;
        }
        Ok(object)
    }

    /// A meta object for a row, the same object for consecutive rows of the same meta (unless
    /// it holds the row's `before`): the runtime hands each handler call a copy of it
    /// (`{ ...meta }` in `runtime/core.js`), so every call still gets an object of its own.
    pub(crate) fn shared_meta(
        &mut self,
        meta: &Meta,
        with_before: bool,
    ) -> rquickjs::Result<Object<'js>> {
        let same = matches!(&self.last_meta, Some((last, _)) if last.schema == meta.schema
            && last.table == meta.table && last.source == meta.source && last.time == meta.time);
        if let (false, true, Some(shared)) = (with_before, same, &self.shared) {
            return Ok(shared.clone());
        }
        let object = self.meta(meta, with_before)?;
        self.shared = (!with_before).then(|| object.clone());
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
        if !matches!(&self.meta_atoms, Some((tag, _)) if *tag == meta.source) {
            let atom = |name: &str| Atom::from_str(self.ctx.clone(), name);
            let tag = atom(meta.source.map_or("", |t| t.name()))?;
            let names = [META_SCHEMA, META_TABLE, "", "nanos", "logical", "before"];
            let [schema, table, _, nanos, logical, before] = names.map(atom);
            self.meta_atoms =
                Some((meta.source, [schema?, table?, tag, nanos?, logical?, before?]));
        }
        let (Some((_, [schema, table, nanos, logical])), Some((_, names))) =
            (&self.last_meta, &self.meta_atoms)
        else {
            unreachable!("set above");
        };
        let object = Object::new(self.ctx.clone())?;
        object.set(names[0].clone(), schema.clone())?;
        object.set(names[1].clone(), table.clone())?;
        if meta.source.is_some() {
            object.set(names[2].clone(), true)?;
        }
        if meta.time.is_some() {
            object.set(names[3].clone(), nanos.clone())?;
            object.set(names[4].clone(), logical.clone())?;
        }
        if with_before {
            match &meta.before {
                Some(before) => object.set(names[5].clone(), row_to_js(&self.ctx, before)?)?,
                None => object.set(names[5].clone(), JsValue::new_null(self.ctx.clone()))?,
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
        let props = collect_props::<String>(&object)?;
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

    /// A row object's columns, naming what to take from `source`: the names of its columns
    /// and the text values handed back unchanged (see [`Inputs`]). Nothing is taken until
    /// [`Source::build`], so a failure leaves `source` whole.
    fn cells(
        &self,
        props: Vec<(Atom<'js>, JsValue<'js>)>,
        source: &mut Source<'_, 'js>,
    ) -> Result<Cells, String> {
        let mut cells = Vec::with_capacity(props.len());
        for (position, (atom, item)) in props.into_iter().enumerate() {
            if item.is_undefined() {
                continue;
            }
            let column = source.column(position, &atom);
            let name = match column.and_then(|c| source.row.get_index(c)) {
                Some((name, _)) => name.clone(),
                None => atom.to_string().map_err(|e| e.to_string())?.into(),
            };
            let what = || format!("column {name:?}");
            let cell = match column {
                Some(c) => self.cell(item, c, source, &what)?,
                None => Cell::Converted(self.value(item, &what)?),
            };
            cells.push((name, cell));
        }
        Ok(cells)
    }

    /// A returned value for source column `c`.
    fn cell(
        &self,
        item: JsValue<'js>,
        c: usize,
        source: &mut Source<'_, 'js>,
        what: &dyn Fn() -> String,
    ) -> Result<Cell, String> {
        if let Noted::Text(given) = &source.columns[c].1
            && !source.taken[c]
            && *given == item
        {
            source.taken[c] = true;
            return Ok(Cell::Taken(c));
        }
        let Some((_, original)) = source.row.get_index(c) else {
            return Ok(Cell::Converted(self.value(item, what)?));
        };
        let document = match (original, &source.columns[c].1) {
            (Value::Json(document), _) | (Value::JsonText(_), Noted::Document(document)) => {
                document
            }
            _ => return Ok(Cell::Converted(self.value(item, what)?)),
        };
        // A document that is a bare number reached the script as text: left to the general
        // rule below.
        let structured = matches!(item.type_of(), Type::Object | Type::Array)
            && !matches!(document, serde_json::Value::Number(_));
        if structured && self.same_as_seen(&item, document) {
            return Ok(Cell::Copied(c));
        }
        let returned = self.value(item, what)?;
        Ok(Cell::Converted(super::exact::keep_text_of(returned, original, document)))
    }

    /// `value` holds what the script was given for `document` (see [`super::exact`]): the
    /// same numbers (as doubles, or as text for those given as text), strings, booleans,
    /// nulls, arrays and objects. `false` also where converting `value` and comparing could
    /// still find it the same (a BigInt, a Date, `undefined`): that case converts.
    fn same_as_seen(&self, value: &JsValue<'js>, document: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match (value.type_of(), document) {
            (Type::Null, J::Null) => true,
            (Type::Bool, J::Bool(b)) => value.as_bool() == Some(*b),
            (Type::Int | Type::Float, J::Number(n)) => {
                seen_number(n).is_some_and(|seen| value.as_number() == Some(seen))
            }
            (Type::String, J::Number(n)) => {
                seen_number(n).is_none() && js_string(value).is_ok_and(|r| r == n.as_str())
            }
            (Type::String, J::String(s)) => js_string(value).is_ok_and(|r| r == *s),
            (Type::Array, J::Array(items)) => {
                let Some(array) = value.as_array() else { return false };
                array.len() == items.len()
                    && items.iter().enumerate().all(|(i, item)| {
                        array.get::<JsValue>(i).is_ok_and(|v| self.same_as_seen(&v, item))
                    })
            }
            (Type::Object, J::Object(map)) => {
                let Some(object) = value.as_object() else { return false };
                if object.is_instance_of(&self.date) {
                    return false;
                }
                let mut count = 0;
                for prop in object.props::<String, JsValue>() {
                    let Ok((key, v)) = prop else { return false };
                    let same = map.get(&key).is_some_and(|s| self.same_as_seen(&v, s));
                    if !same {
                        return false;
                    }
                    count += 1;
                }
                count == map.len()
            }
            _ => false,
        }
    }

    /// What a schema-level handler given `source`'s row returned: a row (default table), a
    /// routing object `{table: rows[]}` (every property an array of objects; `{}` routes
    /// nowhere), or null. Column names and unchanged text values are taken from `source`
    /// (see [`Inputs`]).
    pub(crate) fn routed(
        &self,
        value: JsValue<'js>,
        default_table: &str,
        what: &str,
        source: &mut Source<'_, 'js>,
    ) -> Result<Routed, String> {
        if value.is_null() {
            return Ok(Routed::Dropped);
        }
        if value.type_of() != Type::Object {
            return Ok(Routed::Rows(vec![(default_table.to_owned(), self.row(value, what)?)]));
        }
        let object = value.into_object().ok_or("not an object")?;
        let props = collect_props::<Atom>(&object)?;
        if !is_routing(&props) {
            let cells = self.cells(props, source)?;
            return Ok(Routed::Rows(vec![(default_table.to_owned(), source.build_only(cells))]));
        }
        let mut pending = Vec::new();
        for (table, array) in props {
            let table = table.to_string().map_err(|e| e.to_string())?;
            let array = array.into_array().ok_or("not an array")?;
            for item in array.iter::<JsValue>() {
                let item = item.map_err(|e| e.to_string())?;
                let object = item.into_object().ok_or("not an object")?;
                pending.push((table.clone(), self.cells(collect_props::<Atom>(&object)?, source)?));
            }
        }
        let rows = pending.into_iter().map(|(table, cells)| (table, source.build(cells))).collect();
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
/// Whether a returned object routes rows (`{table: rows[]}`): every property an array of
/// objects.
fn is_routing<K>(props: &[(K, JsValue<'_>)]) -> bool {
    props.iter().all(|(_, v)| {
        v.as_array().is_some_and(|a| {
            a.iter::<JsValue>().all(|item| item.is_ok_and(|i| i.type_of() == Type::Object))
        })
    })
}

fn collect_props<'js, K: rquickjs::FromAtom<'js>>(
    object: &Object<'js>,
) -> Result<Vec<(K, JsValue<'js>)>, String> {
    let mut props = Vec::with_capacity(object.len());
    for prop in object.props::<K, JsValue>() {
        props.push(prop.map_err(|e| e.to_string())?);
    }
    Ok(props)
}

/// The double a JSON number reached the script as, `None` when it got the number's text.
fn seen_number(n: &serde_json::Number) -> Option<f64> {
    match n.as_i64().and_then(|i| i32::try_from(i).ok()) {
        Some(i) => Some(f64::from(i)),
        None => super::exact::js_number(n.as_str()),
    }
}

fn js_string(value: &JsValue<'_>) -> Result<String, String> {
    value
        .as_string()
        .ok_or_else(|| "not a string".to_owned())?
        .to_string()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use crate::script::{Engine, EngineOptions, Meta, Op, Routed};
    use crate::types::{Row, Value};

    const SCRIPT: &str = r#"import * as api from "replicator@v2";
api.configureTargetSchema("db.public", {
  onRowUpsert: (row, meta) => {
    switch (meta.table) {
      case "same": return row;
      case "spread": return { ...row };
      case "copy": return { ...row, doc: JSON.parse(JSON.stringify(row.doc)) };
      case "mutate": row.doc.n = 3; return row;
      case "twice": return { a: [row], b: [{ ...row }] };
      case "swap": return { ...row, id: row.name, name: row.id };
      case "fail": return { a: [row], b: [{ ...row, f: () => 1 }] };
      case "meta": { const seen = String(meta.seen); meta.seen = true; return { id: row.id, seen }; }
    }
  },
  onRowDelete: (row) => row,
});
"#;

    const DOC: &str = r#"{"n": 1.50, "big": 12345678901234567890}"#;

    fn engine() -> Engine {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("convert_{}_{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("script.ts");
        std::fs::write(&path, SCRIPT).expect("script");
        let engine = Engine::from_file(&path, EngineOptions::default()).expect("engine");
        let _ = std::fs::remove_dir_all(&dir);
        engine
    }

    fn batch(table: &str) -> Vec<(Row, Meta)> {
        let row: Row = [
            ("id".into(), Value::Number("7".into())),
            ("name".into(), Value::String("x".into())),
            ("doc".into(), Value::JsonText(DOC.into())),
        ]
        .into_iter()
        .collect();
        vec![(row, Meta { schema: "db.public".into(), table: table.into(), ..Meta::default() })]
    }

    fn pass(engine: &mut Engine, rows: &mut [(Row, Meta)]) -> Vec<(String, Row)> {
        let routed = engine.schema_rows_taking("db.public", Op::Upsert, rows).expect("handled");
        match routed.into_iter().next() {
            Some(Routed::Rows(rows)) => rows,
            other => panic!("{other:?}"),
        }
    }

    fn text(s: &str) -> Value {
        Value::String(s.into())
    }

    /// What a pass-through gives is what converting every value back gave: numbers and
    /// strings as strings, a JSON document the script left alone as the source's own text.
    #[test]
    fn values_handed_back_unchanged_are_taken_as_they_were() {
        let mut engine = engine();
        for table in ["same", "spread", "copy"] {
            let mut rows = batch(table);
            let out = pass(&mut engine, &mut rows);
            let [(to, row)] = &out[..] else { panic!("{out:?}") };
            assert_eq!(to, table);
            assert_eq!(row["id"], text("7"), "{table}");
            assert_eq!(row["name"], text("x"), "{table}");
            assert_eq!(row["doc"], Value::JsonText(DOC.into()), "{table}");
            assert_eq!(row.keys().map(|k| &**k).collect::<Vec<_>>(), ["id", "name", "doc"]);
            // Moved, not copied.
            assert!(!matches!(rows[0].0.get("id"), Some(Value::Number(_))), "{table}");
        }
    }

    #[test]
    fn a_document_changed_in_place_is_converted_keeping_unchanged_numbers() {
        let mut rows = batch("mutate");
        let out = pass(&mut engine(), &mut rows);
        let want: serde_json::Value =
            serde_json::from_str(r#"{"n": 3, "big": 12345678901234567890}"#).expect("JSON");
        assert_eq!(out[0].1["doc"], Value::Json(want));
        assert_eq!(out[0].1["id"], text("7"));
    }

    #[test]
    fn a_value_routed_twice_or_moved_to_another_column_is_whole_everywhere() {
        let mut engine = engine();
        let mut rows = batch("twice");
        let out = pass(&mut engine, &mut rows);
        assert_eq!(out.len(), 2);
        for (_, row) in &out {
            assert_eq!((&row["id"], &row["name"]), (&text("7"), &text("x")));
            assert_eq!(row["doc"], Value::JsonText(DOC.into()));
        }
        let mut rows = batch("swap");
        let out = pass(&mut engine, &mut rows);
        assert_eq!((&out[0].1["id"], &out[0].1["name"]), (&text("x"), &text("7")));
    }

    /// Rows of one table in one batch share their meta object on the Rust side; each handler
    /// call still gets one of its own.
    #[test]
    fn each_call_gets_a_meta_of_its_own() {
        let mut rows = batch("meta");
        rows.extend(batch("meta"));
        let routed = engine().schema_rows_taking("db.public", Op::Upsert, &mut rows).expect("ok");
        for r in routed {
            let Routed::Rows(out) = r else { panic!("{r:?}") };
            assert_eq!(out[0].1["seen"], text("undefined"));
        }
    }

    #[test]
    fn a_row_that_fails_is_left_whole_to_be_named() {
        let mut rows = batch("fail");
        let before = rows[0].0.clone();
        let e = engine()
            .schema_rows_taking("db.public", Op::Upsert, &mut rows)
            .expect_err("a function");
        assert!(e.to_string().contains("function"), "{e}");
        assert_eq!(rows[0].0, before);
    }
}
