//! A bundle's rules compiled for regorus's virtual machine (RVM).
//!
//! Activation compiles the `deny`, `warn`, `needs_approval` and `checks`
//! rules of every package into one RVM program; requests are evaluated on
//! it, several times faster than regorus's tree-walking interpreter (see
//! bench/profiles.md). The interpreter still loads, checks and tests the
//! bundle (the VM does not run `with`, which tests use), and it evaluates a
//! bundle the VM compiler refuses.
//!
//! The VM is configured to behave as the interpreter does: a builtin that
//! fails is an error, not an undefined value, so a bundle fails closed; the
//! same time limit bounds every evaluation; and regorus's default
//! instruction cap (25,000) is lifted, since the time limit is the budget.
//! regorus 0.14.1's VM differs from the interpreter where it matters to a
//! gate (`x := <undefined>`, errors inside a rule body, comparisons across
//! types); the copy in vendor/regorus carries the fixes (vendor/README.md).

use std::{collections::BTreeMap, num::NonZeroU32, sync::Arc};

use regorus::{
    Engine, Rc, Value,
    languages::rego::compiler::Compiler,
    rvm::{Program, RegoVM},
    utils::limits::ExecutionTimerConfig,
};

use super::EVAL_TIME_LIMIT;

/// The compiled program, the bundle's data and where each entry point is.
#[derive(Clone)]
pub(super) struct RuleProgram {
    program: Arc<Program>,
    data: Value,
    /// Entry point path (`data.pkg.deny`) → its index in the program.
    entry_points: BTreeMap<String, usize>,
}

impl RuleProgram {
    /// Compiles `entry_points` (full rule paths) of the modules and data
    /// loaded in `engine`. The engine is cloned, not changed.
    pub(super) fn compile(engine: &Engine, entry_points: &[String]) -> Result<Self, String> {
        let first = entry_points.first().ok_or("no rules to compile")?;
        let mut engine = engine.clone();
        let data = engine.get_data();
        let policy = engine
            .compile_with_entrypoint(&Rc::from(first.as_str()))
            .map_err(|e| e.to_string())?;
        let paths: Vec<&str> = entry_points.iter().map(String::as_str).collect();
        let program = Compiler::compile_from_policy(&policy, &paths).map_err(|e| e.to_string())?;
        let names: Vec<String> = program.entry_points.keys().cloned().collect();
        let mut by_path = BTreeMap::new();
        for path in entry_points {
            let index = names
                .iter()
                .position(|n| n == path)
                .ok_or_else(|| format!("the compiled program has no entry point {path}"))?;
            by_path.insert(path.clone(), index);
        }
        let compiled = RuleProgram {
            program,
            data,
            entry_points: by_path,
        };
        // The data is checked against the rule tree once, here.
        compiled.vm()?;
        Ok(compiled)
    }

    /// A VM loaded with the program and data, configured like the interpreter.
    pub(super) fn vm(&self) -> Result<RegoVM, String> {
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone()).map_err(|e| e.to_string())?;
        vm.set_strict_builtin_errors(true);
        vm.set_max_instructions(usize::MAX);
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            limit: EVAL_TIME_LIMIT,
            check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
        }));
        Ok(vm)
    }

    /// Evaluates entry points in one execution (rules they share are
    /// evaluated once); a path the program lacks is undefined. An error
    /// gives the index of the path that failed and a message naming the
    /// module and line of the failing instruction when the program knows it.
    pub(super) fn eval_all(&self, vm: &mut RegoVM, paths: &[&str]) -> Result<Vec<Value>, (usize, String)> {
        let known: Vec<(usize, usize)> = paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.entry_points.get(*p).map(|&index| (i, index)))
            .collect();
        let indices: Vec<usize> = known.iter().map(|&(_, index)| index).collect();
        let values = vm
            .execute_entry_points_by_index(&indices)
            .map_err(|(k, e)| (known.get(k).map_or(0, |&(i, _)| i), self.message(vm, &e)))?;
        let mut out = vec![Value::Undefined; paths.len()];
        for (&(i, _), value) in known.iter().zip(values) {
            out[i] = value;
        }
        Ok(out)
    }

    /// `e` without the VM's instruction index, with the module and line
    /// of the instruction that failed when the program knows it.
    fn message(&self, vm: &RegoVM, e: &dyn std::fmt::Display) -> String {
        let message = strip_pc(&e.to_string());
        match self.program.get_instruction_span(vm.get_pc()) {
            Some(span) => {
                let module = self
                    .program
                    .sources
                    .get(span.source_index)
                    .map(|s| s.name.as_str())
                    .unwrap_or("?");
                format!("{message} at {module}:{}", span.line)
            }
            None => message,
        }
    }
}

/// The VM's messages end with `(pc=N)` or `, pc=N)`: an instruction index
/// that means nothing to a bundle's author.
fn strip_pc(message: &str) -> String {
    if let Some(i) = message.rfind(" (pc=")
        && message.ends_with(')')
    {
        return message[..i].to_string();
    }
    if let Some(i) = message.rfind(", pc=")
        && message.ends_with(')')
    {
        return format!("{})", &message[..i]);
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::strip_pc;

    #[test]
    fn instruction_indexes_are_left_out_of_messages() {
        assert_eq!(strip_pc("Assertion failed (pc=12)"), "Assertion failed");
        assert_eq!(
            strip_pc("Execution exceeded time limit (elapsed=2s, limit=2s, pc=7)"),
            "Execution exceeded time limit (elapsed=2s, limit=2s)"
        );
        assert_eq!(strip_pc("divide by zero"), "divide by zero");
    }
}
