//! Module resolution and loading: the API modules (`replicator@v2`, `replicator@v1`,
//! `cdc-sink@v1`) and the script's own compiled modules, declared afresh every time (the
//! built-in loader forgets a module after its first load).

use std::path::Path;
use std::sync::Arc;

use rquickjs::loader::{Loader, Resolver};
use rquickjs::{Ctx, Module};

use super::{CORE_MODULE, V1_JS, V2_JS};
use crate::script::compile::{BUILTIN_MODULES, CompiledScript};

pub(super) struct ScriptResolver {
    pub(super) script: Arc<CompiledScript>,
}

impl Resolver for ScriptResolver {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        if BUILTIN_MODULES.contains(&name) {
            return Ok(name.to_owned());
        }
        if name == CORE_MODULE {
            return if BUILTIN_MODULES.contains(&base) {
                Ok(name.to_owned())
            } else {
                Err(rquickjs::Error::new_resolving_message(base, name, "internal module"))
            };
        }
        if name.starts_with("./") || name.starts_with("../") {
            let dir = Path::new(base).parent().unwrap_or(Path::new(""));
            let mut joined = Vec::new();
            for part in dir.join(name).components() {
                match part {
                    std::path::Component::ParentDir => {
                        joined.pop();
                    }
                    std::path::Component::Normal(p) => {
                        joined.push(p.to_string_lossy().into_owned())
                    }
                    _ => {}
                }
            }
            let candidate = joined.join("/");
            for option in [candidate.clone(), format!("{candidate}.ts"), format!("{candidate}.js")]
            {
                if self.script.modules.contains_key(&option) {
                    return Ok(option);
                }
            }
        }
        Err(rquickjs::Error::new_resolving_message(base, name, "not a module of this userscript"))
    }
}

pub(super) struct ScriptLoader {
    pub(super) script: Arc<CompiledScript>,
}

impl Loader for ScriptLoader {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<rquickjs::loader::ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, rquickjs::module::Declared>> {
        let source = match name {
            "replicator@v2" => V2_JS.to_owned(),
            "replicator@v1" | "cdc-sink@v1" => V1_JS.to_owned(),
            _ => match self.script.modules.get(name) {
                Some(module) => module.js.clone(),
                None => return Err(rquickjs::Error::new_loading(name)),
            },
        };
        Module::declare(ctx.clone(), name, source)
    }
}
