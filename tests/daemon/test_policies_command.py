"""The real ``capsem-proxyd`` executable and policy configuration: startup errors, ``policies``."""

from __future__ import annotations

from pathlib import Path

from capsem_proxyd.exchange import tenant_id_for
from tests.support.daemon import assert_startup_error, run_capsem_proxyd


def test_bad_regex_fails_startup_naming_file_line_and_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "# rules\n"
        "[on_model_call]\n"
        'block = ["fine term"]\n'
        "log = [\n"
        "  { name = \"ok\", regex = 'a+b' },\n"
        "  { name = \"broken-group\", regex = '(unclosed' },\n"
        "]\n"
    )
    result = run_capsem_proxyd("start", "--policy-dir", str(tmp_path), "--port", "0")
    assert_startup_error(result, str(rules), "line 6", "rule 'broken-group'", "on_model_call.log[1]",
                         "invalid regular expression")


def test_unnamed_bad_regex_is_located_by_its_text(tmp_path: Path) -> None:
    (tmp_path / "rules.toml").write_text('[on_model_response]\nblock = [\n  "fine",\n  { regex = "x{2,1}" },\n]\n')
    result = run_capsem_proxyd("start", "--policy-dir", str(tmp_path), "--port", "0")
    assert_startup_error(result, "rules.toml", "line 4", "rule 'on_model_response.block[1]'")


def test_unknown_mode_fails_startup(tmp_path: Path) -> None:
    (tmp_path / "debug.toml").write_text('mode = "dry-run"\n')
    result = run_capsem_proxyd("start", "--policy-dir", str(tmp_path), "--port", "0")
    assert_startup_error(result, "debug.toml", "mode must be one of enforce, monitor")


def test_policies_command_lists_policies_modes_and_hooks(tmp_path: Path) -> None:
    main, shadow = tmp_path / "main", tmp_path / "shadow"
    main.mkdir()
    shadow.mkdir()
    (main / "debug.toml").write_text("enabled = true\n")
    (main / "rules.toml").write_text('mode = "monitor"\n[on_model_call]\nblock = ["x"]\n')
    (main / "custom.toml").write_text('class = "tests.policy.test_modes:ApprovalPolicy"\n')
    (shadow / "rules.toml").write_text('[on_model_response]\nlog = ["y"]\n')
    result = run_capsem_proxyd("policies", "--policy-dir", str(main), "--shadow-policy-dir", str(shadow))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"policies ({main}):" in out
    assert "  Approval [enforce]: Asks for confirmation" in out
    assert "  Debug [enforce]: Blocks the 'capsem_block' marker" in out
    assert "  Rules [monitor]: Declarative" in out
    # the main folder has no secrets.toml: Secrets runs by default and says how to turn it off; the shadow
    # folder gets nothing it did not name
    assert "  Secrets [enforce] (by default: a secrets.toml with enabled = false turns it off): Credentials" in out
    assert out.count("  Secrets [") == 1
    assert "hooks: on_model_call, on_tool_call, on_tool_response, on_model_response" in out  # Debug, Rules
    assert "hooks: on_model_call\n" in out  # Approval implements only the prompt hook
    assert f"shadow policies, recorded and never enforced ({shadow}):" in out


def test_policies_command_fails_like_start_on_a_bad_folder(tmp_path: Path) -> None:
    result = run_capsem_proxyd("policies", "--policy-dir", str(tmp_path / "missing"))
    assert_startup_error(result, "does not exist")


def test_tenant_id_command_reads_the_key_from_stdin() -> None:
    result = run_capsem_proxyd("tenant-id", stdin="sk-some-tenant-key\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == tenant_id_for("sk-some-tenant-key")
