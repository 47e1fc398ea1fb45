def test_fixture_works(client):
    assert client.simulate_get("/users").json == []
