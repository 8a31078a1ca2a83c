//! A template's Rego, compiled once into the regorus VM program the
//! `gatekeeper` policy runs in its sandbox.

use regorus::languages::rego::compiler::Compiler;

/// The Rego of a template: its module and its libraries.
pub struct Source<'a> {
    /// The template's own module (it declares `violation`).
    pub rego: &'a str,
    /// Library modules it imports (`data.lib.…`).
    pub libs: Vec<&'a str>,
    /// Rego v1 syntax (`if`, `contains`); Gatekeeper's templates are v0
    /// unless they say otherwise.
    pub v1: bool,
}

/// Compiles `source` into a program whose one entry point is the
/// template's `violation` rule, serialized.
///
/// # Errors
///
/// A parse or compile error of regorus, naming the module.
pub fn compile(source: &Source<'_>) -> Result<Vec<u8>, String> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(!source.v1);
    let package = engine
        .add_policy("template.rego".into(), hoist(source.rego))
        .map_err(|e| format!("rego: {e}"))?;
    for (i, lib) in source.libs.iter().enumerate() {
        engine
            .add_policy(format!("libs[{i}].rego"), hoist(lib))
            .map_err(|e| format!("libs[{i}]: {e}"))?;
    }
    let entry_point = format!("{package}.violation");
    let compiled = engine
        .compile_with_entrypoint(&regorus::Rc::from(entry_point.as_str()))
        .map_err(|e| format!("rego: {entry_point}: {e}"))?;
    let program = Compiler::compile_from_policy(&compiled, &[&entry_point])
        .map_err(|e| format!("rego: {entry_point}: {e}"))?;
    program.serialize_binary()
}

/// OPA's compiler moves a reference out of the arguments of a negated
/// call (`not f(x.missing)` becomes `y = x.missing; not f(y)`), so an
/// undefined reference makes the body fail instead of the call undefined
/// and its negation true. regorus 0.14 does not: do it on the source, for
/// a negated call on a line of its own. A unification, not `:=`: regorus'
/// VM lets an assignment of an undefined value through.
fn hoist(rego: &str) -> String {
    let mut out = String::with_capacity(rego.len());
    let mut next = 0;
    for line in rego.lines() {
        match negated_call(line) {
            Some((indent, function, args)) if args.iter().any(|a| is_reference(a)) => {
                let mut names = Vec::with_capacity(args.len());
                for arg in args {
                    if is_reference(arg) {
                        let name = format!("__tollgate_hoisted_{next}");
                        next += 1;
                        out.push_str(&format!("{indent}{name} = {arg}\n"));
                        names.push(name);
                    } else {
                        names.push(arg.to_owned());
                    }
                }
                out.push_str(&format!("{indent}not {function}({})\n", names.join(", ")));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `(indent, function, arguments)` of a line that is `not f(a, b)` alone.
fn negated_call(line: &str) -> Option<(&str, &str, Vec<&str>)> {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    let call = body.strip_prefix("not ")?.trim_end();
    let (function, rest) = call.split_once('(')?;
    let valid_name = !function.is_empty()
        && function
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let args = rest.strip_suffix(')')?;
    if !valid_name {
        return None;
    }
    // Split at the commas outside brackets and strings; give up on
    // anything unbalanced (the line is then left as it is).
    let mut parts = Vec::new();
    let (mut depth, mut start, mut quoted) = (0i32, 0, false);
    for (i, c) in args.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' | '{' if !quoted => depth += 1,
            ')' | ']' | '}' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    if depth != 0 || quoted {
        return None;
    }
    parts.push(args[start..].trim());
    Some((indent, function, parts))
}

/// Whether an argument is a reference into a document (`x.y`, `x[0]`),
/// not a variable, literal or call.
fn is_reference(arg: &str) -> bool {
    let starts_as_name = arg
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts_as_name
        && (arg.contains('.') || arg.contains('['))
        && !arg.contains('(')
        && !arg.contains(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_negated_calls_are_hoisted_and_nothing_else_changes() {
        let rego = "violation[{\"msg\": m}] {\n  not accept(rule, params.ranges, \"a,b\")\n  not is_update(input.review)\n  not endswith(x, \"*\")\n  not x.y == 1\n  m := \"x\"\n}";
        let hoisted = hoist(rego);
        assert_eq!(
            hoisted,
            "violation[{\"msg\": m}] {\n  __tollgate_hoisted_0 = params.ranges\n  not accept(rule, __tollgate_hoisted_0, \"a,b\")\n  __tollgate_hoisted_1 = input.review\n  not is_update(__tollgate_hoisted_1)\n  not endswith(x, \"*\")\n  not x.y == 1\n  m := \"x\"\n}\n"
        );
    }

    #[test]
    fn a_template_compiles_and_a_missing_reference_makes_the_body_fail() {
        let rego = r#"package t
violation[{"msg": msg}] {
  c := input.review.object.spec.containers[_]
  not allowed(c.name, input.parameters.names)
  msg := sprintf("container %v is not allowed", [c.name])
}
allowed(name, names) { names[_] == name }
"#;
        let program = compile(&Source {
            rego,
            libs: vec![],
            v1: false,
        })
        .unwrap();
        let run = |input: &str| {
            let regorus::rvm::program::DeserializationResult::Complete(program) =
                regorus::rvm::program::Program::deserialize_binary(&program).unwrap()
            else {
                panic!("a partial program");
            };
            let mut vm = regorus::rvm::vm::RegoVM::new();
            vm.load_program(std::sync::Arc::new(program));
            vm.set_input(regorus::Value::from_json_str(input).unwrap());
            vm.execute().unwrap().to_json_str().unwrap()
        };
        let pod = r#"{"review": {"object": {"spec": {"containers": [{"name": "a"}]}}}"#;
        assert!(
            run(&format!(r#"{pod}, "parameters": {{"names": ["b"]}}}}"#))
                .contains("container a is not allowed")
        );
        // No `names`: the reference is undefined, so (as in OPA) no violation.
        assert_eq!(run(&format!(r#"{pod}, "parameters": {{}}}}"#)), "[]");
        let error = compile(&Source {
            rego: "package t\nallow { true }\n",
            libs: vec![],
            v1: false,
        })
        .unwrap_err();
        assert!(error.contains("data.t.violation"), "{error}");
        assert!(
            compile(&Source {
                rego: "package t\nviolation[x] {",
                libs: vec![],
                v1: false
            })
            .unwrap_err()
            .starts_with("rego: ")
        );
    }
}
