//! OPA modules import their linear memory (`env.memory`) for the embedder
//! to make. A memory the host makes per call is an on-demand mapping: mapped,
//! the data segments copied in, and unmapped again, every call. Rewritten to
//! define that memory itself (same limits, exported as `memory`), the module
//! gets what components get: a memory from the pooling allocator, its data
//! laid in copy-on-write from an image, its touched pages kept resident and
//! reset between calls.

use wasm_encoder::reencode::{Error, Reencode, utils};
use wasm_encoder::{ExportKind, ExportSection, ImportSection, MemorySection, Module, SectionId};

/// The module with `env.memory` defined and exported as `memory` instead of
/// imported.
///
/// # Errors
///
/// Bytes that are not a module, a module without the import, or one that
/// already exports a `memory`.
pub fn own_memory(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut rewriter = Rewriter::default();
    let mut module = Module::new();
    rewriter
        .parse_core_module(&mut module, wasmparser::Parser::new(0), bytes)
        .map_err(|e| match e {
            Error::UserError(message) => message,
            other => format!("not a Wasm module: {other}"),
        })?;
    if rewriter.memory.is_none() {
        return Err("the module imports no env.memory: not an OPA Wasm module".into());
    }
    Ok(module.finish())
}

#[derive(Default)]
struct Rewriter {
    /// The imported memory's type, once seen.
    memory: Option<wasmparser::MemoryType>,
    /// Whether the memory section has been written.
    defined: bool,
}

impl Reencode for Rewriter {
    type Error = String;

    fn parse_import_section(
        &mut self,
        imports: &mut ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), Error<String>> {
        for import in section.into_imports() {
            let import = import?;
            match import.ty {
                wasmparser::TypeRef::Memory(memory)
                    if (import.module, import.name) == ("env", "memory") =>
                {
                    self.memory = Some(memory);
                }
                ty => {
                    imports.import(import.module, import.name, self.entity_type(ty)?);
                }
            }
        }
        Ok(())
    }

    fn parse_memory_section(
        &mut self,
        memories: &mut MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), Error<String>> {
        // The imported memory was index 0: defined first, it still is.
        self.define(memories)?;
        utils::parse_memory_section(self, memories, section)
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), Error<String>> {
        // No memory section: write one where it belongs (after tables,
        // before tags and globals).
        let past_memory = |id: Option<SectionId>| {
            id.is_none_or(|id| {
                !matches!(
                    id,
                    SectionId::Custom
                        | SectionId::Type
                        | SectionId::Import
                        | SectionId::Function
                        | SectionId::Table
                        | SectionId::Memory
                )
            })
        };
        if self.memory.is_some()
            && !self.defined
            && after != Some(SectionId::Memory)
            && past_memory(before)
        {
            let mut memories = MemorySection::new();
            self.define(&mut memories)?;
            module.section(&memories);
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), Error<String>> {
        for export in section {
            let export = export?;
            if export.name == "memory" {
                return Err(Error::UserError(
                    "the module already exports a `memory`: not an OPA Wasm module".into(),
                ));
            }
            self.parse_export(exports, export)?;
        }
        exports.export("memory", ExportKind::Memory, 0);
        Ok(())
    }
}

impl Rewriter {
    fn define(&mut self, memories: &mut MemorySection) -> Result<(), Error<String>> {
        let memory = self.memory.ok_or_else(|| {
            Error::UserError("the module imports no env.memory: not an OPA Wasm module".into())
        })?;
        memories.memory(self.memory_type(memory)?);
        self.defined = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_imported_memory_becomes_a_defined_exported_one() {
        let module = wat::parse_str(
            r#"(module
              (import "env" "opa_abort" (func (param i32)))
              (import "env" "memory" (memory 2 10))
              (global i32 (i32.const 7))
              (data (i32.const 16) "kept")
              (func (export "f") (result i32) i32.const 16 i32.load8_u))"#,
        )
        .unwrap();
        let rewritten = own_memory(&module).unwrap();
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, &rewritten).unwrap();
        let imports: Vec<String> = module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        assert_eq!(imports, ["env.opa_abort"]);
        match module.get_export("memory") {
            Some(wasmtime::ExternType::Memory(memory)) => {
                assert_eq!((memory.minimum(), memory.maximum()), (2, Some(10)));
            }
            other => panic!("no memory export: {other:?}"),
        }
        assert!(module.get_export("f").is_some());
    }

    #[test]
    fn modules_that_are_not_opas_are_refused() {
        let no_memory = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
        assert!(
            own_memory(&no_memory)
                .unwrap_err()
                .contains("imports no env.memory")
        );
        let exports_memory = wat::parse_str(
            r#"(module (import "env" "memory" (memory 1)) (export "memory" (memory 0)))"#,
        )
        .unwrap();
        assert!(
            own_memory(&exports_memory)
                .unwrap_err()
                .contains("already exports a `memory`")
        );
        assert!(
            own_memory(b"junk")
                .unwrap_err()
                .starts_with("not a Wasm module")
        );
    }
}
