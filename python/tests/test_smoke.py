def test_import():
    import mmstats

    assert mmstats.CounterField
