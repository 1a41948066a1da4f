"""Smoke reports as a table for people, JSON for tools, and JUnit XML for CI.

In JUnit each check is a testcase: a failure carries the evidence, a not-run check is `skipped` with its
reason, so a CI dashboard never shows a check that did not run as passed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from validate.smoke.check_result import FAIL, NOT_RUN
from validate.smoke.results import ImageReport

FORMATS = ("table", "json", "junit")


def render(reports: list[ImageReport], fmt: str) -> str:
    if fmt == "table":
        return render_table(reports)
    if fmt == "json":
        return render_json(reports)
    if fmt == "junit":
        return render_junit(reports)
    raise ValueError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")


def render_table(reports: list[ImageReport]) -> str:
    lines: list[str] = []
    for report in reports:
        counts = report.counts()
        lines.append(
            f"{report.image}  {report.digest[:19]}  {report.status.upper()}  "
            f"({counts['pass']} pass, {counts['fail']} fail, {counts['not-run']} not-run)"
        )
        width = max((len(c.name) for c in report.checks), default=0)
        for c in report.checks:
            lines.append(f"  {c.name:<{width}}  {c.status:<7}  {c.detail}".rstrip())
        if report.log_path:
            lines.append(f"  container log: {report.log_path}")
        lines.append("")
    return "\n".join(lines)


def render_json(reports: list[ImageReport]) -> str:
    return json.dumps([r.to_dict() for r in reports], indent=2, sort_keys=True) + "\n"


def render_junit(reports: list[ImageReport]) -> str:
    suites = ET.Element("testsuites", name="strata smoke")
    total = {"tests": 0, "failures": 0, "skipped": 0}
    for report in reports:
        counts = report.counts()
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=report.image,
            tests=str(len(report.checks)),
            failures=str(counts[FAIL]),
            errors="0",
            skipped=str(counts[NOT_RUN]),
            time=f"{report.duration_s:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="digest", value=report.digest)
        ET.SubElement(props, "property", name="expect_gpu", value=str(report.expect_gpu).lower())
        for c in report.checks:
            case = ET.SubElement(suite, "testcase", classname=report.image, name=c.name)
            if c.status == FAIL:
                failure = ET.SubElement(case, "failure", message=c.detail, type="smoke-check")
                failure.text = f"expected: {c.expected}\nfound: {c.found}"
            elif c.status == NOT_RUN:
                ET.SubElement(case, "skipped", message=f"not-run: {c.detail}")
        if report.log:
            ET.SubElement(suite, "system-out").text = report.log[-200_000:]
        total["tests"] += len(report.checks)
        total["failures"] += counts[FAIL]
        total["skipped"] += counts[NOT_RUN]
    for key, value in total.items():
        suites.set(key, str(value))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
