"""Every object belongs to a user; users see their own, staff see all."""

from django.db.models import QuerySet


def visible_to(queryset: QuerySet, user, *, owner_field: str = "owner") -> QuerySet:
    if not user.is_authenticated:
        return queryset.none()
    if user.is_staff:
        return queryset
    return queryset.filter(**{owner_field: user})
