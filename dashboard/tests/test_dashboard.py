from django.urls import reverse

from jobs.models import Dataset, Job
from tests.factories import make_job, make_model


def _job(owner, name, status, **extra):
    return make_job(owner, name=name, status=status, trainer="external", **extra)


def test_dashboard_shows_only_the_users_own_work(alice_browser, alice, bob):
    _job(alice, "alice-running", Job.Status.RUNNING, progress={"percent": 42.0, "eta_seconds": 200})
    _job(bob, "bob-secret", Job.Status.FAILED, error_message="bob's failure")
    page = alice_browser.get(reverse("dashboard")).content.decode()
    assert "alice-running" in page and "3 min 20 s" in page
    assert "bob-secret" not in page and "bob&#x27;s failure" not in page


def test_failures_needing_attention_link_to_their_pages(alice_browser, alice):
    job = _job(alice, "broken", Job.Status.FAILED, error_message="trainer exited with 1")
    page = alice_browser.get(reverse("dashboard")).content.decode()
    assert reverse("job-detail", args=[job.pk]) in page and "trainer exited with 1" in page


def test_storage_used_sums_dataset_sizes(alice_browser, alice):
    Dataset.objects.create(
        owner=alice, name="d", path="datasets/users/1/x", file_format="jsonl", size_bytes=3 * 1024 * 1024
    )
    page = alice_browser.get(reverse("dashboard")).content.decode()
    assert "3.0\xa0MB" in page and "datasets · 1 dataset" in page


def test_dashboard_query_count_does_not_grow_with_the_data(alice_browser, alice, django_assert_max_num_queries):
    for index in range(15):
        _job(alice, f"job-{index}", Job.Status.RUNNING)
    with django_assert_max_num_queries(16):
        assert alice_browser.get(reverse("dashboard")).status_code == 200


def test_list_pages_keep_their_filters_across_pages(alice_browser, alice, settings):
    from jobs import views

    for index in range(views.PAGE_SIZE + 1):
        _job(alice, f"job-{index}", Job.Status.RUNNING)
    page = alice_browser.get(reverse("job-list"), {"status": "running"}).content.decode()
    assert "?status=running&amp;page=2" in page and "Page 1 of 2" in page


def test_the_storage_card_counts_every_model_and_says_which_have_no_files(alice_browser, alice, bob):
    make_model(alice, name="with-files", files={"weights.bin": b"w" * (2 * 1024 * 1024)})
    make_model(alice, name="empty-record")
    make_model(bob, name="bobs", files={"a.bin": b"a"})
    page = alice_browser.get(reverse("dashboard")).content.decode()
    assert "models · 2 models (1 without files)" in page and "2.0\xa0MB" in page


def test_recent_models_show_their_improvement_over_the_base_in_the_metric_it_was_measured_in(alice_browser, alice):
    from models_app.services import model_eval_results_set

    classifier, chat = make_model(alice, name="classifier"), make_model(alice, name="chat")
    model_eval_results_set(model_id=classifier.id, results={"task": "classification", "improvement": {"accuracy": 0.2}})
    model_eval_results_set(model_id=chat.id, results={"task": "generation", "improvement": {"token_f1": -0.05}})
    page = alice_browser.get(reverse("dashboard")).content.decode()
    assert '<th class="num">vs base</th>' in page and "Accuracy Δ" not in page
    assert '+20.0 pts</span> <span class="hint">accuracy</span>' in page
    assert '-5.0 pts</span> <span class="hint">token F1</span>' in page
