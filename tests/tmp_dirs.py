"""Disk. A train_net run leaves checkpoints of up to 330 MB (R-50 weights and their momenta): a session's runs
come to about 7 GB, and CI runs two sessions beside two environments (a CI machine ran out of space). pytest.ini's
``tmp_path_retention_policy = failed`` removes a passed test's tmp_path; this removes what a test file's
module-scoped fixtures made with tmp_path_factory once they are torn down, unless a test of the file failed (kept
to look into, as pytest keeps a failed test's tmp_path). tests/conftest.py imports both."""
import shutil

import pytest

__all__ = ["pytest_runtest_makereport", "_remove_module_tmp_dirs"]

_FILES_WITH_FAILURES = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        _FILES_WITH_FAILURES.add(item.path)
    return report


@pytest.fixture(scope="module", autouse=True)
def _remove_module_tmp_dirs(request, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield  # (autouse: set up before, and so torn down after, the file's other module-scoped fixtures)
    if request.config.getini("tmp_path_retention_policy") != "failed" or request.path in _FILES_WITH_FAILURES:
        return
    for path in set(base.iterdir()) - before:
        if path.is_symlink():  # mktemp's "<name>current" link to its newest numbered directory
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
