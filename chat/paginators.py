"""Admin pagination over tables too large to count on every page load."""

import json

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import connections
from django.utils.functional import cached_property


def planner_rows(queryset) -> int:
    """The number of rows PostgreSQL's planner expects `queryset` to return, without running it."""
    text = queryset.order_by().explain(format="json")
    if not text:  # Django knows the query matches nothing (an id past the column's range) and sends none
        return 0
    plan = json.loads(text)
    return int(plan[0]["Plan"]["Plan Rows"])


class EstimatedCountPaginator(Paginator):
    """Count exactly up to EXACT_UP_TO rows; past that, on PostgreSQL, take the planner's estimate.

    COUNT(*) reads every matching row: the whole table for an unfiltered list. An estimate is free
    but can be far off: with no statistics for a search, the planner may expect a few hundred rows
    where a million match, and the admin offers "Show all" for a count up to list_max_show_all and
    renders the whole result for one up to list_per_page. So an estimate of at most EXACT_UP_TO rows
    is checked by reading the ids of at most one row more (an index-only read; no COUNT at all).
    """

    EXACT_UP_TO = 1000

    @cached_property
    def _counted(self) -> tuple[int, bool]:
        """(count, whether it is the planner's estimate)."""
        queryset = self.object_list
        if connections[queryset.db].vendor != "postgresql":
            return super().count, False
        estimate = planner_rows(queryset)
        if estimate > self.EXACT_UP_TO:
            return estimate, True
        bounded = len(queryset.order_by().values_list("pk", flat=True)[: self.EXACT_UP_TO + 1])
        return bounded, bounded > self.EXACT_UP_TO

    @property
    def count(self) -> int:
        return self._counted[0]

    @property
    def is_estimate(self) -> bool:
        return self._counted[1]

    def validate_number(self, number):
        if not self.is_estimate:
            return super().validate_number(number)
        # An estimate may fall short of the real count: pages past it may hold rows, or be empty.
        try:
            number = int(number)
        except (TypeError, ValueError) as exc:
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from exc
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def page(self, number):
        if not self.is_estimate:
            return super().page(number)
        # Nor is the last page cut off at the estimate.
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)
