"""``ciclovita validate`` finds every kind of mistake and says precisely where and what.

Each test breaks one thing in a fresh copy of the repository's ``campaigns/`` and
``templates/`` and checks the problem reported: file, line, field, the accepted choices. Most
go through ``ciclovita.authoring.validation.validate``; a few run the real command in a
subprocess (``CICLOVITA_CAMPAIGNS_DIR``/``CICLOVITA_TEMPLATES_DIR``), as a marketer does.
Lines are looked up in the edited file, so the tests follow the campaign files as they change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ciclovita.authoring.validation import validate
from ciclovita.errors import Problem
from ciclovita.lifecycle import RFM_SEGMENTS, STAGES

ROOT = Path(__file__).resolve().parents[1]
SEGMENT_NAMES = (
    "champions",
    "loyal_and_champions",
    "promoters",
    "high_value_at_risk",
    "cannot_lose",
    "new_italian_customers",
)
THANK_YOU_EN_SUBJECT = 'en: "Thank you for your order, {{ customer.first_name }}!"'


@dataclass
class Repo:
    """A copy of campaigns/ and templates/ to break."""

    root: Path

    @property
    def campaigns(self) -> Path:
        return self.root / "campaigns"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    def campaign(self, name: str) -> Path:
        return self.campaigns / name

    def template(self, name: str) -> Path:
        return self.templates / name

    def edit(self, path: Path, old: str, new: str) -> Path:
        """Replace the one occurrence of ``old`` in ``path``."""
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
        path.write_text(text.replace(old, new), encoding="utf-8")
        return path

    def validate(self, *files: Path) -> list[Problem]:
        return validate(list(files), campaigns_dir=self.campaigns, templates_dir=self.templates)


def line_of(path: Path, text: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line of ``path`` containing ``text``."""
    seen = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{text!r} not found in {path}")


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(str(p) for p in problems)
    return problems[0]


def located(problem: Problem, path: Path, line: int | None, column: str | None) -> None:
    assert (problem.source, problem.line, problem.column) == (str(path), line, column), str(problem)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    return Repo(tmp_path)


def run_validate(repo: Repo, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CICLOVITA_")}
    env.update(
        CICLOVITA_CAMPAIGNS_DIR=str(repo.campaigns),
        CICLOVITA_TEMPLATES_DIR=str(repo.templates),
        CICLOVITA_DATABASE_URL=f"sqlite:///{repo.root / 'never-created.db'}",
        PYTHONPATH=str(ROOT),
        COLUMNS="1000",
    )
    result = subprocess.run(
        [sys.executable, "-m", "ciclovita", "validate", *args],
        env=env,
        cwd=repo.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not (repo.root / "never-created.db").exists(), "validate must not touch a database"
    return result


# ------------------------------------------------------------------ the pristine copy


def test_the_repository_copy_is_valid(repo: Repo) -> None:
    assert repo.validate() == []
    assert repo.validate(repo.campaigns) == []


def test_cli_pristine_copy_exits_0_with_a_success_message(repo: Repo) -> None:
    result = run_validate(repo)
    assert result.returncode == 0, result.stderr
    assert "all campaigns, segments, lifecycle rules and templates are valid" in result.stdout
    assert result.stderr == ""


# ------------------------------------------------------------------ YAML


def test_yaml_syntax_error_gives_the_line(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "kind: marketing", "kind: marketing: promo")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "kind: marketing: promo"), None)
    assert problem.message == "invalid YAML: mapping values are not allowed here"


def test_unclosed_bracket_points_at_the_line_that_opens_it(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "priority: 80", "priority: [80")
    problem = only(repo.validate())
    opened = line_of(path, "priority: [80")
    assert problem.line == opened or f"line {opened}" in problem.message, str(problem)


def test_duplicate_key_gives_the_line_of_the_repeat(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "priority: 80", "priority: 80\npriority: 81")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "priority: 81"), None)
    assert problem.message == "duplicate key 'priority'"


def test_unknown_field_suggests_the_right_one_and_lists_the_accepted(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "priority: 80", "prority: 80")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "prority: 80"), "prority")
    assert problem.message.startswith("unknown field, did you mean 'priority'?")
    for field in ("trigger", "audience", "content", "guards", "variants", "offer", "priority"):
        assert field in problem.message.split("accepted:", 1)[1]


def test_unknown_nested_field_names_its_path(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "  delay: 1d", "  dealy: 1d")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "dealy: 1d"), "trigger.dealy")
    assert problem.message == (
        "unknown field, did you mean 'delay'? (accepted: event, delay, expires_after)"
    )


def test_wrong_type_priority_high(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "priority: 80", 'priority: "high"')
    problem = only(repo.validate())
    located(problem, path, line_of(path, 'priority: "high"'), "priority")
    assert "valid integer" in problem.message
    assert problem.value == "high"


def test_bad_enum_value_kind_lists_the_choices(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "kind: marketing", "kind: promo")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "kind: promo"), "kind")
    assert "'marketing' or 'transactional'" in problem.message
    assert problem.value == "promo"


def test_bad_stage_lists_every_stage(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("onboarding.yaml"), "stage_entered: new_customer", "stage_entered: vip"
    )
    problem = only(repo.validate())
    located(problem, path, line_of(path, "stage_entered: vip"), "trigger.stage_entered")
    for stage in STAGES:
        assert f"'{stage}'" in problem.message
    assert problem.value == "vip"


def test_bad_duration_says_what_a_duration_looks_like(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "delay: 1d", "delay: 1 day")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "delay: 1 day"), "trigger.delay")
    assert problem.message == "a duration with its unit, such as 30m, 12h, 1d or 2w (m, h, d, w)"
    assert problem.value == "1 day"


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [("delay: 1d", "delay: -1", "trigger.delay"), ("expires_after: 3d", "expires_after: 0d", None)],
    ids=["negative-delay", "zero-expiry"],
)
def test_impossible_durations_are_rejected(
    repo: Repo, old: str, new: str, field: str | None
) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), old, new)
    problem = only(repo.validate())
    assert problem.source == str(path)
    assert problem.line == line_of(path, new)
    assert problem.column == (field or "trigger.expires_after")


def test_unknown_trigger_kind_lists_the_kinds(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), "event: order_placed", "when: order_placed")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "trigger:"), "trigger")
    assert problem.message == (
        "a trigger needs one of: event, stage_entered, segment_entered, date, schedule"
    )


# ------------------------------------------------------------------ references to segments


def test_unknown_segment_in_trigger(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("loyalty_reward.yaml"),
        "segment_entered: loyal_and_champions",
        "segment_entered: loyal_and_champs",
    )
    problem = only(repo.validate())
    located(problem, path, line_of(path, "segment_entered:"), "trigger.segment_entered")
    assert problem.message == f"unknown segment; accepted: {', '.join(SEGMENT_NAMES)}"
    assert problem.value == "loyal_and_champs"


def test_unknown_segment_in_audience_lists(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("thank_you.yaml"),
        "  consent: marketing",
        "  consent: marketing\n  segments: [champs]\n  exclude_segments: [champions, vips]",
    )
    problems = repo.validate()
    assert len(problems) == 2, problems
    located(problems[0], path, line_of(path, "segments: [champs]"), "audience.segments")
    located(problems[1], path, line_of(path, "exclude_segments:"), "audience.exclude_segments")
    assert [p.value for p in problems] == ["champs", "vips"]
    for problem in problems:
        assert problem.message == f"unknown segment; accepted: {', '.join(SEGMENT_NAMES)}"


def test_unknown_segment_in_an_audience_condition(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("thank_you.yaml"),
        "  consent: marketing",
        "  consent: marketing\n  where:\n    any:\n      - segment: promoters\n"
        "      - segment: promotors",
    )
    problem = only(repo.validate())
    located(problem, path, line_of(path, "segment: promotors"), "audience.where.any.1.segment")
    assert problem.message.startswith("unknown segment; accepted: ")
    assert set(problem.message.split("accepted: ")[1].split(", ")) == set(SEGMENT_NAMES)
    assert problem.value == "promotors"


# ------------------------------------------------------------------ conditions

CONDITION_MISTAKES = [
    pytest.param(
        "stag: {in: [prospect, engaged]}",
        "stag",
        ["unknown field. did you mean 'stage'?", "rfm_segment", "days_since_last_order"],
        "stag",
        id="unknown-field",
    ),
    pytest.param(
        "stage: {gt: prospect}",
        "stage.gt",
        ["unknown operator; accepted: eq, ne, in, not_in, is_null"],
        "gt",
        id="bad-operator",
    ),
    pytest.param(
        "r_score: {gte: 7}", "r_score.gte", ["out of range; accepted: 1…5"], "7", id="out-of-range"
    ),
    pytest.param(
        "order_count: {gte: many}",
        "order_count.gte",
        ["expected a number (int)"],
        "many",
        id="wrong-type",
    ),
    pytest.param(
        "rfm_segment: Champion",
        "rfm_segment",
        ["not a valid value. did you mean 'Champions'?", *RFM_SEGMENTS],
        "Champion",
        id="unknown-rfm-segment",
    ),
    pytest.param(
        "p_alive: {between: [0.2]}",
        "p_alive.between",
        ["'between' takes a list of two values [low, high]"],
        None,
        id="between-one-value",
    ),
]


@pytest.mark.parametrize(("condition", "field", "expected", "value"), CONDITION_MISTAKES)
def test_bad_condition_in_a_campaign(
    repo: Repo, condition: str, field: str, expected: list[str], value: str | None
) -> None:
    path = repo.edit(repo.campaign("nurture.yaml"), "stage: {in: [prospect, engaged]}", condition)
    problem = only(repo.validate())
    located(problem, path, line_of(path, condition), f"audience.where.{field}")
    for text in expected:
        assert text in problem.message
    assert problem.value == value


SEGMENT_MISTAKES = [
    pytest.param(
        "where: {rfm_segment: Champions}",
        "where: {rfm_segmnt: Champions}",
        "champions.where.rfm_segmnt",
        ["unknown field. did you mean 'rfm_segment'?", "accepted: stage, rfm_segment"],
        "rfm_segmnt",
        id="unknown-field",
    ),
    pytest.param(
        "where: {nps: {gte: 9}}",
        "where: {nps: {greater: 9}}",
        "promoters.where.nps.greater",
        ["unknown operator; accepted: eq, ne, in, not_in, gt, gte, lt, lte, between, is_null"],
        "greater",
        id="bad-operator",
    ),
    pytest.param(
        "clv_quantile: {gte: 0.8}",
        "clv_quantile: {gte: 80}",
        "high_value_at_risk.where.all.1.clv_quantile.gte",
        ["out of range; accepted: 0…1"],
        "80",
        id="out-of-range",
    ),
    pytest.param(
        "where: {nps: {gte: 9}}",
        'where: {nps: {gte: "nine"}}',
        "promoters.where.nps.gte",
        ["expected a number (int)"],
        "nine",
        id="wrong-type",
    ),
    pytest.param(
        "where: {rfm_segment: Champions}",
        "where: {rfm_segment: Champs}",
        "champions.where.rfm_segment",
        ["not a valid value. did you mean 'Champions'?", "accepted: Champions, Loyal"],
        "Champs",
        id="unknown-rfm-segment",
    ),
]


def segment_problem(repo: Repo, old: str, new: str) -> tuple[Path, list[Problem]]:
    path = repo.edit(repo.campaign("segments.yaml"), old, new)
    return path, repo.validate()


@pytest.mark.parametrize(("old", "new", "field", "expected", "value"), SEGMENT_MISTAKES)
def test_bad_condition_in_segments_yaml(
    repo: Repo, old: str, new: str, field: str, expected: list[str], value: str
) -> None:
    path, problems = segment_problem(repo, old, new)
    mine = [p for p in problems if p.source == str(path)]
    problem = only(mine)
    located(problem, path, line_of(path, new.split(": ", 1)[1]), f"segments.{field}")
    for text in expected:
        assert text in problem.message
    assert problem.value == value


@pytest.mark.parametrize(("old", "new", "field", "expected", "value"), SEGMENT_MISTAKES[:2])
def test_one_bad_segment_does_not_make_the_others_unknown(
    repo: Repo, old: str, new: str, field: str, expected: list[str], value: str
) -> None:
    path, problems = segment_problem(repo, old, new)
    assert [p.source for p in problems] == [str(path)], "\n".join(map(str, problems))


# ------------------------------------------------------------------ lifecycle and policy


def test_lifecycle_thresholds_out_of_order(repo: Repo) -> None:
    path = repo.edit(repo.campaign("lifecycle.yaml"), "after_days: 120 ", "after_days: 400 ")
    problem = only(repo.validate())
    assert problem.source == str(path)
    assert problem.message == (
        "at_risk.after_days (400) must be smaller than lapsed.after_days (365)"
    )


def test_lifecycle_thresholds_out_of_order_points_at_the_threshold(repo: Repo) -> None:
    path = repo.edit(repo.campaign("lifecycle.yaml"), "after_days: 120 ", "after_days: 400 ")
    problem = only(repo.validate())
    # the at_risk block, whose threshold crosses lapsed's
    located(problem, path, line_of(path, "after_days: 400") - 1, "at_risk")
    assert "at_risk.after_days (400) must be smaller than lapsed.after_days (365)" in (
        problem.message
    )


@pytest.mark.parametrize(
    ("old", "new", "field", "expected", "value"),
    [
        (
            "max_messages: 3",
            "max_messages: 0",
            "frequency_cap.max_messages",
            "greater than or equal to 1",
            "0",
        ),
        (
            "unsubscribe_topic: marketing",
            "unsubscribe_topic: everything",
            "unsubscribe_topic",
            "'marketing', 'surveys' or 'newsletter'",
            "everything",
        ),
        ('start: "21:00"', 'start: "25:00"', "quiet_hours.start", "HH:MM", "25:00"),
    ],
    ids=["cap-zero", "unsubscribe-topic", "quiet-hours"],
)
def test_policy_bad_value(
    repo: Repo, old: str, new: str, field: str, expected: str, value: str
) -> None:
    path = repo.edit(repo.campaign("policy.yaml"), old, new)
    problem = only(repo.validate())
    located(problem, path, line_of(path, new), field)
    assert expected in problem.message
    assert problem.value == value


# ------------------------------------------------------------------ templates


def test_template_missing_for_a_locale(repo: Repo) -> None:
    missing = repo.template("thank_you/en.txt")
    missing.unlink()
    path = repo.campaign("thank_you.yaml")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "template: thank_you"), "content.template")
    assert problem.message == f"missing template {missing} for locale 'en'"


def test_variant_template_missing_for_a_locale(repo: Repo) -> None:
    missing = repo.template("win_back_short/it.txt")
    missing.unlink()
    path = repo.campaign("win_back.yaml")
    problem = only(repo.validate())
    assert problem.source == str(path)
    assert problem.line == line_of(path, "template: win_back_short")
    assert problem.message == f"missing template {missing} for locale 'it'"


def test_variant_template_missing_names_the_variant(repo: Repo) -> None:
    repo.template("win_back_short/it.txt").unlink()
    assert only(repo.validate()).column == "variants.1.template"


def test_template_syntax_error_gives_the_template_line(repo: Repo) -> None:
    path = repo.edit(repo.template("thank_you/en.html"), "{{ order.id }}", "{{ order.id }")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "{{ order.id }<"), None)
    assert problem.message == "template syntax: unexpected '}'"


def test_template_variable_the_campaign_does_not_provide(repo: Repo) -> None:
    path = repo.edit(
        repo.template("onboarding/en.html"), "<p>Enjoy,", "<p>Order {{ order.id }}. Enjoy,"
    )
    problem = only(repo.validate())
    located(problem, path, line_of(path, "{{ order.id }}"), "order")
    assert problem.message.startswith(
        "uses 'order', which campaign 'onboarding' does not provide (available: "
    )
    available = problem.message.split("(available: ", 1)[1].rstrip(")").split(", ")
    assert "order" not in available
    assert {"customer", "stage", "links", "brand"} <= set(available)


def test_wrong_attribute_is_caught_by_the_trial_render(repo: Repo) -> None:
    path = repo.edit(repo.template("thank_you/en.html"), "{{ order.id }}", "{{ order.total }}")
    problem = only(repo.validate())
    assert (problem.source, problem.line) == (str(path), line_of(path, "{{ order.total }}"))
    assert "does not render for locale 'en', variant 'default'" in problem.message
    assert "has no attribute 'total'" in problem.message


def test_wrong_attribute_in_a_variant_template_names_the_variant(repo: Repo) -> None:
    path = repo.edit(
        repo.template("win_back_short/en.html"),
        "Welcome back{%",
        "{{ offer.coupon }} Welcome back{%",
    )
    problem = only(repo.validate())
    assert (problem.source, problem.line) == (str(path), line_of(path, "{{ offer.coupon }}"))
    assert "does not render for locale 'en', variant 'short'" in problem.message
    assert "has no attribute 'coupon'" in problem.message


def test_unknown_filter_is_a_problem_not_a_crash(repo: Repo) -> None:
    path = repo.edit(
        repo.template("thank_you/en.html"),
        "long_date(locale, customer.timezone)",
        "longdate(locale, customer.timezone)",
    )
    problem = only(repo.validate())
    assert (problem.source, problem.line) == (str(path), line_of(path, "longdate"))
    assert "longdate" in problem.message


def test_a_filter_given_the_wrong_value_is_a_problem_not_a_crash(repo: Repo) -> None:
    path = repo.edit(
        repo.template("thank_you/en.html"),
        "{{ order.amount_cents | money(order.currency, locale) }}",
        "{{ order.placed_at | money(order.currency, locale) }}",
    )
    problem = only(repo.validate())
    assert (problem.source, problem.line) == (str(path), line_of(path, "order.placed_at | money"))


# ------------------------------------------------------------------ subjects and locales


def test_subject_using_an_unknown_variable(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("thank_you.yaml"),
        THANK_YOU_EN_SUBJECT,
        'en: "Thank you, {{ custmer.first_name }}!"',
    )
    problem = only(repo.validate())
    located(problem, path, line_of(path, "custmer"), "content.subject")
    assert problem.message.startswith("uses 'custmer', which this campaign does not provide")
    assert "(available: brand, campaign, customer" in problem.message


def test_subject_syntax_error(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("thank_you.yaml"),
        THANK_YOU_EN_SUBJECT,
        'en: "Thank you, {{ customer.first_name }!"',
    )
    problem = only(repo.validate())
    located(problem, path, line_of(path, "first_name }!"), "content.subject")
    assert problem.message == "template syntax: unexpected '}'"


def test_subject_wrong_attribute_points_at_the_subject_line(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("thank_you.yaml"),
        THANK_YOU_EN_SUBJECT,
        'en: "Thank you for order {{ order.total }}!"',
    )
    problem = only(repo.validate())
    assert "has no attribute 'total'" in problem.message
    located(problem, path, line_of(path, "order.total"), "content.subject")


def test_subject_missing_for_a_locale(repo: Repo) -> None:
    path = repo.edit(repo.campaign("thank_you.yaml"), f"    {THANK_YOU_EN_SUBJECT}\n", "")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "subject:"), "content.subject")
    assert problem.message == "no text for locale(s) en"


def test_fallback_locale_not_in_locales(repo: Repo) -> None:
    path = repo.campaign("thank_you.yaml")
    repo.edit(path, "  locales: [it, en]", "  locales: [en]")
    repo.edit(path, "fallback_locale: en", "fallback_locale: it")
    problem = only(repo.validate())
    located(problem, path, line_of(path, "fallback_locale: it"), "content.fallback_locale")
    assert problem.message.startswith("'it' is not one of locales en")


def test_variant_names_repeated(repo: Repo) -> None:
    path = repo.edit(repo.campaign("win_back.yaml"), "name: short", "name: letter")
    problem = only(repo.validate())
    assert problem.source == str(path)
    assert problem.message == "variant names repeat: letter"


def test_variant_names_repeated_points_at_the_variants(repo: Repo) -> None:
    path = repo.edit(repo.campaign("win_back.yaml"), "name: short", "name: letter")
    problem = only(repo.validate())
    assert problem.column is not None and problem.column.startswith("variants"), str(problem)
    assert problem.line in (line_of(path, "variants:"), line_of(path, "name: letter", 2))


def test_end_before_start(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("thank_you.yaml"),
        "priority: 80",
        "priority: 80\nstart: 2026-05-01\nend: 2026-04-01",
    )
    problem = only(repo.validate())
    assert problem.source == str(path)
    assert problem.message == "end 2026-04-01 is before start 2026-05-01"


def test_end_before_start_points_at_end(repo: Repo) -> None:
    path = repo.edit(
        repo.campaign("thank_you.yaml"),
        "priority: 80",
        "priority: 80\nstart: 2026-05-01\nend: 2026-04-01",
    )
    located(only(repo.validate()), path, line_of(path, "end: 2026-04-01"), "end")


# ------------------------------------------------------------------ scope and completeness


def break_two(repo: Repo) -> tuple[Path, Path]:
    thank_you = repo.edit(repo.campaign("thank_you.yaml"), "priority: 80", 'priority: "high"')
    onboarding = repo.edit(repo.campaign("onboarding.yaml"), "priority: 70", 'priority: "low"')
    return thank_you, onboarding


def test_every_problem_of_every_file_is_reported_at_once(repo: Repo) -> None:
    thank_you, onboarding = break_two(repo)
    template = repo.edit(
        repo.template("survey/en.html"), "{% block content %}", "{% block content %}{{ offer }}"
    )
    problems = repo.validate()
    assert {(p.source, p.column) for p in problems} == {
        (str(thank_you), "priority"),
        (str(onboarding), "priority"),
        (str(template), "offer"),
    }


def test_one_file_reports_only_its_own_problems_and_the_shared_files(repo: Repo) -> None:
    thank_you, onboarding = break_two(repo)
    repo.edit(repo.template("thank_you/en.html"), "{{ order.id }}", "{{ order.total }}")
    assert [p.source for p in repo.validate(onboarding)] == [str(onboarding)]
    assert [p.source for p in repo.validate(thank_you)] == [str(thank_you)]

    policy = repo.edit(repo.campaign("policy.yaml"), "max_messages: 3", "max_messages: 0")
    segments = repo.edit(
        repo.campaign("segments.yaml"), "where: {nps: {gte: 9}}", "where: {nps: {gte: 11}}"
    )
    sources = {p.source for p in repo.validate(onboarding)}
    assert sources == {str(onboarding), str(policy), str(segments)}


def test_cli_reports_two_broken_files_and_exits_1(repo: Repo) -> None:
    thank_you, onboarding = break_two(repo)
    result = run_validate(repo)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "2 problem(s):" in result.stderr
    assert f"{thank_you}:{line_of(thank_you, 'priority:')}: priority: " in result.stderr
    assert f"{onboarding}:{line_of(onboarding, 'priority:')}: priority: " in result.stderr
    assert "(got 'high')" in result.stderr and "(got 'low')" in result.stderr

    only_one = run_validate(repo, str(onboarding))
    assert only_one.returncode == 1
    assert "1 problem(s):" in only_one.stderr
    assert str(thank_you) not in only_one.stderr


def test_cli_reports_a_template_variable_with_file_line_and_name(repo: Repo) -> None:
    path = repo.edit(
        repo.template("onboarding/en.html"), "<p>Enjoy,", "<p>Order {{ order.id }}. Enjoy,"
    )
    result = run_validate(repo)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        f"{path}:{line_of(path, '{{ order.id }}')}: order: uses 'order', which campaign "
        "'onboarding' does not provide" in result.stderr
    )


def test_cli_reports_a_missing_file_argument(repo: Repo) -> None:
    result = run_validate(repo, str(repo.campaign("no_such_campaign.yaml")))
    assert result.returncode == 1
    assert f"{repo.campaign('no_such_campaign.yaml')}: no such file or directory" in result.stderr
