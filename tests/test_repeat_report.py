"""scripts/test --repeat N: the pass count of each test, from pytest-repeat's runs."""

pytest_plugins = ["pytester"]


def test_the_pass_count_of_each_repeated_test_is_printed(pytester):
    pytester.makepyfile(
        test_sample="""
        import itertools
        import pytest

        calls = itertools.count()

        def test_fails_once_in_three():
            assert next(calls) % 3 != 1

        @pytest.mark.parametrize("n", [1, 2])
        def test_always(n):
            pass
        """
    )
    result = pytester.runpytest("-p", "tests.repeat_report", "--count", "3", "--repeat-scope", "function")
    result.assert_outcomes(passed=8, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*repeat: each test 3 times in a row*",
            "3 of 3 passed  test_sample.py::test_always[1]",
            "3 of 3 passed  test_sample.py::test_always[2]",
            "2 of 3 passed  test_sample.py::test_fails_once_in_three",
        ]
    )


def test_nothing_is_added_without_repeat(pytester):
    pytester.makepyfile(test_sample="def test_one():\n    pass\n")
    result = pytester.runpytest("-p", "tests.repeat_report")
    result.assert_outcomes(passed=1)
    assert "repeat:" not in result.stdout.str()
