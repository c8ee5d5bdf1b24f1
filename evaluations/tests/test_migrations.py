"""Migrations that move data: what existing rows hold after them, and after going back."""

import pytest

from tests.support.migrations import migrate, migrate_to_latest

BEFORE = [("evaluations", "0004_merge_attempts_and_generation")]
AFTER = [("evaluations", "0005_judge_answers_naming_no_winner")]


@pytest.fixture(autouse=True)
def latest_schema_afterwards():
    yield
    migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_0005_tells_cached_answers_that_named_no_winner_from_ties_the_judge_chose_and_going_back_merges_them(alice):
    apps = migrate(BEFORE)
    JudgeAnswer = apps.get_model("evaluations", "JudgeAnswer")

    def cached(key, winner, reason):
        return JudgeAnswer.objects.create(
            owner_id=alice.id, key=key, endpoint="ollama", judge_model="tiny", winner=winner, reason=reason
        ).id

    unparsed = cached("1" * 64, "tie", "the judge's answer named no winner: 'I think B is nicer.'")
    chosen_tie = cached("2" * 64, "tie", "both answers are equally good")
    decided = cached("3" * 64, "A", "the judge's answer named no winner: a reason a judge gave, with a winner")

    def winners(apps):
        rows = apps.get_model("evaluations", "JudgeAnswer").objects.in_bulk([unparsed, chosen_tie, decided])
        return [rows[unparsed].winner, rows[chosen_tie].winner, rows[decided].winner]

    assert winners(migrate(AFTER)) == ["none", "tie", "A"]
    assert winners(migrate(BEFORE)) == ["tie", "tie", "A"]
