"""The regression gate's outputs for CI: JUnit XML and a Markdown summary fit for a pull-request comment.

Pure functions of a GateResult (or of the error that stopped the gate). JUnit: one test suite,
one test case for the probe ("the adapter is applied"), one per gated task metric and one per
gated general task (failing if any of its gated metrics fails).
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from harness.errors import HarnessError
from harness.regression import Check

MAX_IDS = 10


def _suite_element(root: ET.Element, name: str, cases: list[ET.Element], seconds: float) -> ET.Element:
    failures = sum(1 for c in cases if c.find("failure") is not None)
    errors = sum(1 for c in cases if c.find("error") is not None)
    suite = ET.SubElement(root, "testsuite", name=name, tests=str(len(cases)), failures=str(failures),
                          errors=str(errors), skipped="0", time=f"{seconds:.3f}",
                          timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    root.set("tests", str(len(cases)))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    root.set("time", f"{seconds:.3f}")
    return suite


def _case(classname: str, name: str, failure: str | None = None, details: str = "",
          seconds: float = 0.0) -> ET.Element:
    case = ET.Element("testcase", classname=classname, name=name, time=f"{seconds:.3f}")
    if failure is not None:
        ET.SubElement(case, "failure", message=failure, type="regression").text = details or failure
    if details:
        ET.SubElement(case, "system-out").text = details
    return case


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def junit_xml(result) -> str:
    root = ET.Element("testsuites", name="harness regress")
    prefix = f"harness.regress.{result.suite}"
    cases = [_case(f"{prefix}.candidate", "adapter applied (probe)",
                   None if result.probe.applied else "the candidate does not change the base model",
                   result.probe.describe())]
    for check in result.checks:
        if check.scope == "task":
            cases.append(_case(f"{prefix}.task", check.key, None if check.passed else check.reason(), check.reason()))
    groups: dict[str, list[Check]] = {}
    for check in result.checks:
        if check.scope == "general":
            groups.setdefault(check.group, []).append(check)
    for task, checks in groups.items():
        failed = [c for c in checks if not c.passed]
        cases.append(_case(f"{prefix}.general", task,
                           "; ".join(f"{c.key} may be worse than the baseline" for c in failed) if failed else None,
                           "\n".join(c.reason() for c in checks)))
    suite = _suite_element(root, prefix, cases, result.seconds.get("total", 0.0))
    props = ET.SubElement(suite, "properties")
    for name, value in [("candidate", str(result.candidate.path)), ("candidate.sha256", result.candidate.sha256),
                        ("baseline.candidate", str(result.baseline.candidate.get("path"))),
                        ("baseline.created", result.baseline.created),
                        *[(f"fingerprint.{k}", v) for k, v in result.baseline.fingerprints.items()]]:
        ET.SubElement(props, "property", name=name, value=value)
    suite.extend(cases)
    return _xml(root)


def junit_error(suite_name: str, error: HarnessError) -> str:
    """A JUnit file for a gate that could not run to a verdict (not comparable, refused, bad input)."""
    root = ET.Element("testsuites", name="harness regress")
    kind = {7: "not-comparable", 4: "refused-artifact", 3: "data-error", 2: "usage-error"}.get(error.exit_code,
                                                                                                "error")
    case = ET.Element("testcase", classname=f"harness.regress.{suite_name}", name=kind.replace("-", " "),
                      time="0.000")
    ET.SubElement(case, "error", message=error.message.splitlines()[0], type=kind).text = "\n".join(error.lines())
    suite = _suite_element(root, f"harness.regress.{suite_name}", [case], 0.0)
    suite.append(case)
    return _xml(root)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def markdown(result) -> str:
    ok = result.passed
    lines = [f"## {'✅ Regression gate passed' if ok else '❌ Regression gate failed'}: {result.suite}", "",
             f"Candidate `{result.candidate.path}` ({result.candidate.kind}, sha256 "
             f"`{result.candidate.sha256[:12]}`) against the baseline of `{result.baseline.candidate.get('path')}` "
             f"(recorded {result.baseline.created}).", ""]
    confidence = result.checks[0].confidence if result.checks else None
    if confidence is not None:
        lines += [f"Non-inferiority per metric, paired by example, one-sided at {confidence:.0%}: a metric fails "
                  "when its worst plausible change is beyond the limit (the tolerated worsening).", ""]
    lines += ["| check | baseline | candidate | change | worst plausible | limit | result |",
              "|---|---:|---:|---:|---:|---:|---|",
              f"| adapter applied (probe) | | | | | | {'✅' if result.probe.applied else '❌'} "
              f"max logit change {result.probe.max_abs_diff:.3g} |"]
    for c in result.checks:
        arrow = "↑" if c.higher_is_better else "↓"
        lines.append(f"| {c.key} {arrow} | {_fmt(c.baseline)} | {_fmt(c.candidate)} | {c.difference:+.4g} | "
                     f"{c.worst:+.4g} | {c.limit:+.4g} | {'✅' if c.passed else '❌'} |")
    lines.append("")
    failures = result.failures()
    if failures:
        lines += ["**Why it failed**", ""] + [f"- {reason}" for reason in failures] + [""]
    broke = [c for c in result.checks if c.broke]
    for c in broke:
        shown = ", ".join(f"`{i}`" for i in c.broke[:MAX_IDS])
        more = f" and {len(c.broke) - MAX_IDS} more" if len(c.broke) > MAX_IDS else ""
        lines.append(f"- {c.key}: {len(c.broke)} example(s) right in the baseline are wrong now "
                     f"({c.better} the other way): {shown}{more}")
    if broke:
        lines.append("")
    if result.notes:
        lines += [f"> {note}" for note in result.notes] + [""]
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    n = next((c.n for c in result.checks if c.scope == "task"), 0)
    lines.append(f"<sub>harness regress · {n} test examples · {timing}</sub>")
    return "\n".join(lines) + "\n"


def markdown_error(suite_name: str, error: HarnessError) -> str:
    title = {7: "not comparable", 4: "candidate refused"}.get(error.exit_code, "could not run")
    return "\n".join([f"## ⚠️ Regression gate {title}: {suite_name}", "", *[f"- {line}" for line in error.lines()],
                      ""]) + "\n"


def run_with_reports(run, suite_path, junit, markdown_path):
    """Run the gate; write the JUnit and Markdown files for its verdict, or for the error that stopped it."""
    from harness.gate import suite_name
    from harness.results import atomic_write_text

    try:
        result = run()
    except HarnessError as exc:
        if junit:
            atomic_write_text(junit, junit_error(suite_name(suite_path), exc))
        if markdown_path:
            atomic_write_text(markdown_path, markdown_error(suite_name(suite_path), exc))
        raise
    if junit:
        atomic_write_text(junit, junit_xml(result))
    if markdown_path:
        atomic_write_text(markdown_path, markdown(result))
    return result


def _value_line(name: str, v) -> str:
    interval = f"[{v.ci_low:.4g}, {v.ci_high:.4g}]" if v.ci_low is not None else ""
    return f"  {name:<32} {v.value:>10.4g}  {interval}  n={v.n}"


def evaluation_text(suite_name: str, ev) -> str:
    """`harness eval`'s table: every metric with its interval, the general scores, the probe, the time."""
    lines = [f"{suite_name}: {ev.candidate.kind} {ev.candidate.path} (sha256 {ev.candidate.sha256[:12]})"]
    lines += [_value_line(name, v) for name, v in ev.metrics.items()]
    if ev.general:
        lines.append("general:")
        lines += [_value_line(name, v) for name, v in ev.general.items()]
    lines.append(f"probe: {ev.probe.describe()}")
    lines += [f"note: {note}" for note in ev.candidate.notes]
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in ev.seconds.items()))
    return "\n".join(lines)
