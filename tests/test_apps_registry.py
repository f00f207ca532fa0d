import pytest

from datasette_imgsim.errors import ImgsimError

from datasette_imgsim import apps


def test_registry_names_and_order():
    assert [app.name for app in apps.list_apps()] == ["digikam", "shotwell", "darktable", "lightroom", "dogsheep", "generic"]
    assert apps.list_apps()[-1] is apps.get_app("generic")  # generic is the fallback, tried last
    for app in apps.APPS:
        assert isinstance(app, apps.App) and app.title and app.description
        assert apps.get_app(app.name.upper()) is app


def test_unknown_app_lists_the_names():
    with pytest.raises(apps.UnknownApp) as error:
        apps.get_app("picasa")
    assert isinstance(error.value, ImgsimError)
    assert str(error.value) == ("unknown app 'picasa'; choose one of: "
                                "digikam, shotwell, darktable, lightroom, dogsheep, generic")


def test_sql_literal_quoting():
    from datasette_imgsim.apps._schema import quote_literal

    assert quote_literal("Bob's") == "'Bob''s'"
    with pytest.raises(ImgsimError):
        quote_literal("a\x00b")
