//! TypeScript in, ES-module JavaScript and a source map out, in-process with swc.
//!
//! A userscript is an entry file plus the relative files it imports, all inside the entry's
//! folder. Each file is parsed (TypeScript for `.ts`, JavaScript for `.js`), stripped of its
//! types, and printed back as JavaScript with a table that maps every generated position to
//! its place in the original file, so an exception thrown by the engine can be reported at
//! `file.ts:line:col`. Syntax errors stop the load with the position and the offending line.
//!
//! Imports: `replicator@v2`, `replicator@v1`, `cdc-sink@v1`, and relative paths (`./util`,
//! `../lib/x.ts`) that stay inside the script's folder; an extensionless path tries `.ts`,
//! then `.js`. Anything else (`fs`, `node:fs`, URLs, packages) is refused at load.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use swc_common::sync::Lrc;
use swc_common::{BytePos, FileName, GLOBALS, Globals, LineCol, Mark, SourceMap, Spanned};
use swc_ecma_ast::{EsVersion, ModuleDecl, ModuleItem, Program};
use swc_ecma_codegen::text_writer::JsWriter;
use swc_ecma_codegen::{Config as CodegenConfig, Emitter};
use swc_ecma_parser::{EsSyntax, Syntax, TsSyntax, parse_file_as_module};
use swc_ecma_transforms_base::fixer::fixer;
use swc_ecma_transforms_base::hygiene::hygiene;
use swc_ecma_transforms_base::resolver;
use swc_ecma_transforms_typescript::strip;

/// The module specifiers the engine provides.
pub const BUILTIN_MODULES: &[&str] = &["replicator@v2", "replicator@v1", "cdc-sink@v1"];

/// Why a script could not be compiled or its imports resolved.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The file cannot be read.
    #[error("cannot read userscript {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TypeScript/JavaScript.
    #[error("{location}: syntax error: {message}\n{excerpt}")]
    Syntax {
        /// `file.ts:line:col`.
        location: Location,
        /// The parser's message.
        message: String,
        /// The offending line with a caret under the column.
        excerpt: String,
    },
    /// An import we do not provide.
    #[error(
        "{file}: cannot import {specifier:?}: {reason}; userscripts may import replicator@v2, \
         replicator@v1, cdc-sink@v1 and relative files inside the script's folder"
    )]
    Import {
        /// The importing file (relative to the script's folder).
        file: String,
        /// The specifier as written.
        specifier: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A position in a source file: `file:line:col`, both 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, relative to the script's folder (e.g. `main.ts`, `lib/util.ts`).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Generated position → original position, for one module.
#[derive(Debug, Clone, Default)]
pub struct PositionMap {
    /// `(generated line, generated column, original line, original column)`, all 1-based,
    /// sorted by generated position.
    entries: Vec<(u32, u32, u32, u32)>,
}

impl PositionMap {
    /// The original `(line, column)` of a generated position: the closest mapped position at
    /// or before it on the same generated line, or the first one after it.
    pub fn original(&self, line: u32, column: u32) -> Option<(u32, u32)> {
        let idx = self.entries.partition_point(|&(l, c, _, _)| (l, c) <= (line, column));
        let before = idx.checked_sub(1).map(|i| self.entries[i]).filter(|e| e.0 == line);
        let after = self.entries.get(idx).copied().filter(|e| e.0 == line);
        before.or(after).map(|(_, _, ol, oc)| (ol, oc))
    }

    /// The raw `(generated line, generated column, original line, original column)` table.
    pub fn entries(&self) -> &[(u32, u32, u32, u32)] {
        &self.entries
    }
}

/// One compiled file.
#[derive(Debug, Clone)]
pub struct CompiledModule {
    /// Name relative to the script's folder, with `/` separators: the engine's module name.
    pub name: String,
    /// The original source text.
    pub source: String,
    /// The JavaScript the engine runs.
    pub js: String,
    /// Generated → original positions.
    pub map: PositionMap,
    /// The import specifiers, as written, resolved to module names (builtins unchanged).
    pub imports: Vec<String>,
}

/// A userscript and everything it imports, compiled.
#[derive(Debug, Clone)]
pub struct CompiledScript {
    /// The folder holding the entry file; imports may not leave it.
    pub root: PathBuf,
    /// The entry module's name.
    pub entry: String,
    /// Every module by name.
    pub modules: BTreeMap<String, CompiledModule>,
}

impl CompiledScript {
    /// Maps a generated position in module `name` back to its TypeScript source.
    pub fn original_location(&self, name: &str, line: u32, column: u32) -> Option<Location> {
        let module = self.modules.get(name)?;
        let (line, column) = module.map.original(line, column)?;
        Some(Location { file: name.to_owned(), line, column })
    }
}

/// Compiles `entry` and, transitively, the relative files it imports.
pub fn compile_script(entry: &Path) -> Result<CompiledScript, CompileError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|source| CompileError::Read { path: path.to_owned(), source })
    };
    let absolute = std::path::absolute(entry)
        .map_err(|source| CompileError::Read { path: entry.to_owned(), source })?;
    let root = absolute.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let entry_name = module_name(&root, &absolute).unwrap_or_else(|| "userscript.ts".to_owned());
    let mut modules = BTreeMap::new();
    let mut pending = vec![(entry_name.clone(), absolute)];
    while let Some((name, path)) = pending.pop() {
        if modules.contains_key(&name) {
            continue;
        }
        let source = read(&path)?;
        let mut module = compile_source(&name, &source)?;
        let mut resolved = Vec::new();
        for specifier in &module.imports {
            if BUILTIN_MODULES.contains(&specifier.as_str()) {
                resolved.push(specifier.clone());
                continue;
            }
            let (dep_name, dep_path) = resolve_relative(&root, &path, &name, specifier)?;
            resolved.push(dep_name.clone());
            pending.push((dep_name, dep_path));
        }
        module.imports = resolved;
        modules.insert(name, module);
    }
    Ok(CompiledScript { root, entry: entry_name, modules })
}

/// The module name of `path` relative to `root`, with `/` separators.
fn module_name(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<_> =
        rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    Some(parts.join("/"))
}

/// Lexically normalises `a/./b/../c` to `a/c` (no filesystem access, no symlinks).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn resolve_relative(
    root: &Path,
    importer: &Path,
    importer_name: &str,
    specifier: &str,
) -> Result<(String, PathBuf), CompileError> {
    let fail = |reason: &str| CompileError::Import {
        file: importer_name.to_owned(),
        specifier: specifier.to_owned(),
        reason: reason.to_owned(),
    };
    if !(specifier.starts_with("./") || specifier.starts_with("../")) {
        let reason = if specifier.contains("://") {
            "URLs are not loaded"
        } else if specifier.starts_with('/') {
            "absolute paths are not loaded"
        } else {
            "there is no such module in the userscript sandbox (no Node.js builtins or packages)"
        };
        return Err(fail(reason));
    }
    let base = importer.parent().unwrap_or(root);
    let joined = normalize(&base.join(specifier));
    if !joined.starts_with(root) {
        return Err(fail("it leaves the script's folder"));
    }
    let candidates: Vec<PathBuf> = match joined.extension().and_then(|e| e.to_str()) {
        Some("ts" | "js" | "mts" | "mjs") => vec![joined.clone()],
        _ => vec![
            PathBuf::from(format!("{}.ts", joined.display())),
            PathBuf::from(format!("{}.js", joined.display())),
        ],
    };
    let found = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| fail("no such file (an extensionless import tries .ts, then .js)"))?;
    let name = module_name(root, &found).ok_or_else(|| fail("it leaves the script's folder"))?;
    Ok((name, found))
}

/// Compiles one file's text. `name` is used in messages and as the module's name.
pub fn compile_source(name: &str, source: &str) -> Result<CompiledModule, CompileError> {
    let cm: Lrc<SourceMap> = Default::default();
    let fm = cm.new_source_file(Lrc::new(FileName::Custom(name.to_owned())), source.to_owned());
    let syntax = if name.ends_with(".js") || name.ends_with(".mjs") {
        Syntax::Es(EsSyntax::default())
    } else {
        Syntax::Typescript(TsSyntax::default())
    };
    let syntax_error = |pos: BytePos, message: String| {
        let loc = cm.lookup_char_pos(pos);
        let line_text =
            fm.get_line(loc.line.saturating_sub(1)).map(|l| l.to_string()).unwrap_or_default();
        let caret = format!("{}^", " ".repeat(loc.col_display));
        CompileError::Syntax {
            location: Location {
                file: name.to_owned(),
                line: loc.line as u32,
                column: loc.col_display as u32 + 1,
            },
            message,
            excerpt: format!("  {line_text}\n  {caret}"),
        }
    };
    let mut recovered = Vec::new();
    let module = parse_file_as_module(&fm, syntax, EsVersion::Es2022, None, &mut recovered)
        .map_err(|e| syntax_error(e.span().lo, e.kind().msg().into_owned()))?;
    if let Some(e) = recovered.into_iter().next() {
        return Err(syntax_error(e.span().lo, e.kind().msg().into_owned()));
    }

    // Imports are read before type stripping: TypeScript elides an import whose bindings are
    // unused or only types, but a forbidden module must fail the load all the same.
    let imports: Vec<String> = module
        .body
        .iter()
        .filter_map(|item| match item {
            ModuleItem::ModuleDecl(ModuleDecl::Import(d)) if !d.type_only => Some(&d.src),
            ModuleItem::ModuleDecl(ModuleDecl::ExportAll(d)) if !d.type_only => Some(&d.src),
            ModuleItem::ModuleDecl(ModuleDecl::ExportNamed(d)) if !d.type_only => d.src.as_ref(),
            _ => None,
        })
        .map(|s| s.value.to_string_lossy().into_owned())
        .collect();

    GLOBALS.set(&Globals::new(), || {
        let unresolved = Mark::new();
        let top_level = Mark::new();
        let mut program = Program::Module(module);
        program.mutate(resolver(unresolved, top_level, true));
        program.mutate(strip(unresolved, top_level));
        program.mutate(hygiene());
        program.mutate(fixer(None));
        let Program::Module(module) = program else {
            unreachable!("a module stays a module");
        };

        let mut js = Vec::new();
        let mut mappings: Vec<(BytePos, LineCol)> = Vec::new();
        {
            let writer = JsWriter::new(cm.clone(), "\n", &mut js, Some(&mut mappings));
            let mut emitter = Emitter {
                cfg: CodegenConfig::default().with_target(EsVersion::Es2022),
                cm: cm.clone(),
                comments: None,
                wr: writer,
            };
            emitter.emit_module(&module).map_err(|e| CompileError::Syntax {
                location: Location { file: name.to_owned(), line: 1, column: 1 },
                message: format!("cannot print the compiled module: {e}"),
                excerpt: String::new(),
            })?;
        }
        let mut entries: Vec<(u32, u32, u32, u32)> = mappings
            .iter()
            .filter(|(pos, _)| !pos.is_dummy())
            .map(|(pos, generated)| {
                let loc = cm.lookup_char_pos(*pos);
                (generated.line + 1, generated.col + 1, loc.line as u32, loc.col_display as u32 + 1)
            })
            .collect();
        entries.sort_unstable();
        entries.dedup_by_key(|e| (e.0, e.1));
        Ok(CompiledModule {
            name: name.to_owned(),
            source: source.to_owned(),
            js: String::from_utf8_lossy(&js).into_owned(),
            map: PositionMap { entries },
            imports,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(source: &str) -> CompiledModule {
        compile_source("main.ts", source).expect("compiles")
    }

    #[test]
    fn types_are_stripped_and_api_imports_kept() {
        let m = compile(
            "import * as api from \"replicator@v2\";\n\
             import type { Row } from \"replicator@v2\";\n\
             interface X { a: number }\n\
             const enum Op { Up = 1 }\n\
             export function f(row: Row, n: number = Op.Up): Row | null { return row as Row; }\n\
             api.configureTargetSchema(\"db.public\", { onRowUpsert: f, onRowDelete: f });\n",
        );
        assert!(m.js.contains("import * as api from \"replicator@v2\""), "{}", m.js);
        assert!(!m.js.contains("interface") && !m.js.contains(": Row"), "{}", m.js);
        assert!(!m.js.contains("Op.Up"), "const enum inlined: {}", m.js);
        assert_eq!(m.imports, ["replicator@v2"], "type-only imports are dropped");
    }

    #[test]
    fn syntax_errors_point_at_the_line_and_column() {
        let err = compile_source("bad.ts", "const a = 1;\nconst b = ;\n").expect_err("syntax");
        let text = err.to_string();
        assert!(text.starts_with("bad.ts:2:11: syntax error: "), "{text}");
        assert!(text.contains("  const b = ;\n            ^"), "{text}");
    }

    #[test]
    fn positions_map_back_to_the_typescript() {
        let source = "type T = { a: string };\n\nexport function boom(x: T): never {\n    throw new Error(x.a);\n}\n";
        let m = compile(source);
        let (gen_line, gen_text) =
            m.js.lines().enumerate().find(|(_, l)| l.contains("throw")).expect("throw is emitted");
        let gen_col = gen_text.find("throw").expect("column") as u32 + 1;
        let original = m.map.original(gen_line as u32 + 1, gen_col).expect("mapped");
        assert_eq!(original, (4, 5), "js:\n{}", m.js);
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("replicator-compile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn relative_imports_are_followed_inside_the_folder() {
        let dir = temp_dir("ok");
        write(
            &dir,
            "main.ts",
            "import { twice } from \"./lib/math\";\nimport \"./side.js\";\nexport const x = twice(2);\n",
        );
        write(
            &dir,
            "lib/math.ts",
            "export * from \"./more\";\nexport function twice(n: number) { return n * 2; }\n",
        );
        write(&dir, "lib/more.ts", "export const k: number = 1;\n");
        write(&dir, "side.js", "export const y = 1;\n");
        let script = compile_script(&dir.join("main.ts")).expect("compiles");
        assert_eq!(script.entry, "main.ts");
        let names: Vec<_> = script.modules.keys().cloned().collect();
        assert_eq!(names, ["lib/math.ts", "lib/more.ts", "main.ts", "side.js"]);
        assert_eq!(script.modules["main.ts"].imports, ["lib/math.ts", "side.js"]);
        assert_eq!(script.modules["lib/math.ts"].imports, ["lib/more.ts"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn forbidden_imports_are_named() {
        let dir = temp_dir("bad");
        for (source, reason) in [
            ("import * as fs from \"fs\";", "\"fs\": there is no such module"),
            ("import x from \"node:fs\";", "\"node:fs\": there is no such module"),
            ("import x from \"https://x.example/m.js\";", "URLs are not loaded"),
            ("import x from \"../outside\";", "it leaves the script's folder"),
            (
                "import x from \"./missing\";",
                "no such file (an extensionless import tries .ts, then .js)",
            ),
            ("export * from \"/etc/passwd\";", "absolute paths are not loaded"),
        ] {
            write(&dir, "main.ts", source);
            let err = compile_script(&dir.join("main.ts")).expect_err(source).to_string();
            assert!(err.starts_with("main.ts: cannot import"), "{err}");
            assert!(err.contains(reason), "{source}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_entry_is_a_read_error() {
        let err = compile_script(Path::new("/nonexistent/x.ts")).expect_err("missing");
        assert!(err.to_string().starts_with("cannot read userscript /nonexistent/x.ts"), "{err}");
    }
}
