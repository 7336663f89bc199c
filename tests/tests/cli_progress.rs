//! Progress where CLI work is long (issue 21): `flotilla apply --wait`
//! follows each applied workload until it is available, with a line each,
//! and fails saying which one did not get there; `rollout status` draws a
//! bar on a terminal (a pseudo-terminal from `script`) and plain lines
//! when its output is not one.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use flotilla_e2e::ControllerProcess;
use flotilla_e2e::fleet::{AgentProcess, SLEEPER, push_busybox, shell_deployment, wait_for_ready_nodes};

fn job(name: &str, image: &str, script: &str, completions: u32) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  completions: {completions}
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: {image}
        args: ["sh", "-c", "{script}"]
"#
    )
}

/// `flotilla apply --wait -f -` with `manifest`.
fn apply_wait(controller: &ControllerProcess, manifest: &str, extra: &[&str]) -> Output {
    let mut child = controller
        .cli()
        .unwrap()
        .args(["apply", "--wait", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn said(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// `text` without its terminal escape sequences (colours, cursor moves).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn apply_waits_for_its_workloads_and_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let controller = ControllerProcess::start(&dir.path().join("controller")).unwrap();
    let image = push_busybox(&controller, dir.path());
    let _agent = AgentProcess::start(&controller, "progress-a", &dir.path().join("a"));
    wait_for_ready_nodes(&controller, 1, Duration::from_secs(20));

    // A Deployment and a Job together: both followed to the end.
    let manifest =
        format!("{}---\n{}", shell_deployment("waited", &image, 2, SLEEPER), job("counted", &image, "sleep 1", 2));
    let output = apply_wait(&controller, &manifest, &["--timeout", "120s"]);
    let text = said(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("deployment/waited created"), "{text}");
    // Not a terminal: a plain line per change, the last one saying it is there.
    assert!(text.contains("deployment/waited: 2/2 successfully rolled out (revision 1)"), "{text}");
    assert!(text.contains("job/counted: 2/2 complete"), "{text}");
    assert!(!text.contains('\u{1b}'), "no terminal codes in plain lines: {text:?}");

    // A Job that fails: --wait says which and exits non-zero.
    let output = apply_wait(&controller, &job("doomed", &image, "exit 3", 1), &["--timeout", "120s"]);
    let text = said(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("job/doomed failed"), "{text}");

    // Nothing there in time: the timeout names what it waited for.
    let output = apply_wait(&controller, &shell_deployment("slow", "e2e/nowhere:1", 1, SLEEPER), &["--timeout", "2s"]);
    let text = said(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("timed out after 2s waiting for deployment/slow"), "{text}");

    // rollout status on a terminal: a bar that fills, then the verdict.
    let cli = controller.cli().unwrap();
    let mut command_line: Vec<String> = vec![cli.get_program().to_string_lossy().into_owned()];
    command_line.extend(cli.get_args().map(|a| a.to_string_lossy().into_owned()));
    command_line.extend(["rollout", "status", "deploy/waited", "--timeout", "30s"].map(String::from));
    let quoted: Vec<String> = command_line.iter().map(|a| format!("'{}'", a.replace('\'', r"'\''"))).collect();
    let mut script = Command::new("script");
    script.args(["-qefc", &quoted.join(" "), "/dev/null"]).stdin(Stdio::null());
    for (key, value) in cli.get_envs() {
        if let Some(value) = value {
            script.env(key, value);
        }
    }
    let output = script.output().expect("script (util-linux) runs a command on a pseudo-terminal");
    let text = plain(&said(&output));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("deployment/waited [========================] 2/2"), "a filled bar: {text:?}");
    assert!(text.contains("deployment \"waited\" successfully rolled out (revision 1)"), "{text:?}");
}
