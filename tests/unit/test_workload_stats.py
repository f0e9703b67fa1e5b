"""shortpath.app.workload: the pure measurement side of ``connect --workload`` (percentiles,
per-second buckets, the summary), fed scripted observations on a fake clock."""

import pytest

from shortpath.app.workload import WorkloadStats, format_second, format_summary, percentile


@pytest.mark.parametrize("values,p,want", [
    ([], 50, None),
    ([7.0], 50, 7.0),
    ([7.0], 99, 7.0),
    ([1, 2, 3, 4], 50, 2),          # nearest rank: ceil(0.5 * 4) = 2nd
    ([1, 2, 3, 4], 51, 3),
    ([4, 3, 2, 1], 100, 4),         # order of input does not matter
    (list(range(1, 101)), 95, 95),
    (list(range(1, 101)), 99, 99),
    (list(range(1, 101)), 0, 1),
])
def test_percentile_nearest_rank(values, p, want):
    assert percentile(values, p) == want


def test_unknown_workload_is_refused():
    with pytest.raises(ValueError):
        WorkloadStats("video", 0.0)


def test_desktop_seconds_bucket_frames_and_latency_per_second():
    st = WorkloadStats("desktop", start=100.0)
    st.path(100.0, "tcp-relay")
    # second 0: three frames at 10/20/90 ms; second 1: one frame at 40 ms, path changes
    for t, lat in ((100.1, 10.0), (100.5, 20.0), (100.9, 90.0), (101.2, 40.0)):
        st.frame(t, lat)
    st.path(101.3, "udp-managed")
    st.echo_sent(100.0)
    st.echo(100.02, 5.0)
    st.echo_sent(101.0)
    st.echo(101.01, 3.0)
    s0, s1 = st.second(0), st.second(1)
    assert s0["second"] == 1 and s0["path"] == "tcp-relay"
    assert s0["frames"] == 3 and s0["frame_p50_ms"] == 20.0 and s0["frame_p95_ms"] == 90.0
    assert s0["echo_p50_ms"] == 5.0 and s0["echo_n"] == 1
    assert s1["frames"] == 1 and s1["frame_p50_ms"] == 40.0 and s1["path"] == "udp-managed"
    assert "mbit_s" not in s0     # desktop lines show frames/s, not Mbit/s


def test_a_quiet_second_keeps_the_last_path_and_reports_nothing_measured():
    st = WorkloadStats("echo", start=0.0)
    st.path(0.2, "udp-direct")
    st.echo(0.3, 2.0)
    quiet = st.second(1)           # nothing observed in [1, 2)
    assert quiet["path"] == "udp-direct"
    assert quiet["echo_n"] == 0 and quiet["echo_p50_ms"] is None
    assert quiet["datagrams_sent"] == quiet["datagrams_echoed"] == 0
    assert "frames" not in quiet and "mbit_s" not in quiet


def test_bulk_throughput_per_second_and_overall():
    st = WorkloadStats("bulk", start=10.0)
    st.delivered(10.5, 1_000_000)      # 8 Mbit in second 0
    st.delivered(11.5, 500_000)        # 4 Mbit in second 1
    st.delivered(11.9, 0)
    assert st.second(0)["mbit_s"] == 8.0
    assert st.second(1)["mbit_s"] == 4.0
    s = st.summary(duration=2.0)
    assert s["bytes_delivered"] == 1_500_000 and s["mbit_s"] == 6.0
    assert [r["mbit_s"] for r in s["per_second"]] == [8.0, 4.0]
    with pytest.raises(ValueError):
        st.delivered(12.0, -1)


def test_datagrams_counted_where_sent_and_echoed():
    st = WorkloadStats("echo", start=0.0)
    for i in range(10):
        st.datagram_sent(0.1 * i)                     # ten in second 0
    for i in range(7):
        st.datagram_echoed(0.1 * i + 0.95, 1.0 + i)   # echoes straddle the second boundary
    s0, s1 = st.second(0), st.second(1)
    assert (s0["datagrams_sent"], s0["datagrams_echoed"]) == (10, 1)
    assert (s1["datagrams_sent"], s1["datagrams_echoed"]) == (0, 6)
    s = st.summary(2.0)
    assert s["datagrams_sent"] == 10 and s["datagrams_echoed"] == 7
    assert s["datagram_p50_ms"] == 4.0 and s["datagram_p99_ms"] == 7.0


def test_summary_desktop_counts_frames_against_expected_and_switches():
    st = WorkloadStats("desktop", start=0.0)
    for t, tr in ((0.0, "tcp-relay"), (0.1, "tcp-relay"), (0.5, "udp-managed"), (1.5, "tcp-relay"),
                  (2.5, "udp-managed")):
        st.path(t, tr)
    lats = [float(x) for x in range(1, 101)]
    for k, lat in enumerate(lats):
        st.frame(k * 0.03, lat)
    st.frame_corrupt(1.0)
    st.frames_expected = 120
    s = st.summary(3.0)
    assert s["frames_delivered"] == 100 and s["frames_expected"] == 120 and s["frames_corrupt"] == 1
    assert (s["frame_p50_ms"], s["frame_p95_ms"], s["frame_p99_ms"]) == (50.0, 95.0, 99.0)
    assert s["paths"] == ["tcp-relay", "udp-managed", "tcp-relay", "udp-managed"]
    assert s["switches"] == 3 and s["path"] == "udp-managed"
    assert len(s["per_second"]) == 3
    assert sum(r["frames"] for r in s["per_second"]) == 100


def test_bulk_summary_names_its_latency_as_queries():
    st = WorkloadStats("bulk", start=0.0)
    st.echo_sent(0.1)
    st.echo(0.3, 200.0)
    s = st.summary(1.0)
    assert s["query_sent"] == 1 and s["query_n"] == 1 and s["query_p50_ms"] == 200.0
    assert "echo_p50_ms" not in s


def test_observations_before_start_fall_into_the_first_second():
    st = WorkloadStats("echo", start=5.0)
    st.echo(4.9, 1.0)
    assert st.second(0)["echo_n"] == 1


def test_text_lines_show_the_measured_figures():
    st = WorkloadStats("desktop", start=0.0)
    st.path(0.0, "udp-managed")
    st.frame(0.5, 12.34)
    st.datagram_sent(0.1)
    st.datagram_echoed(0.2, 2.0)
    line = format_second(st.second(0))
    assert "udp-managed" in line and "1 frames/s" in line and "12.3" in line and "datagrams 1/1" in line
    st.frames_expected = 2
    text = "\n".join(format_summary(st.summary(1.0)))
    assert "1/2 delivered" in text and "udp-managed" in text and "0 switches" in text

    bulk = WorkloadStats("bulk", start=0.0)
    bulk.path(0.0, "tcp-relay")
    bulk.delivered(0.5, 250_000)
    assert "2.00 Mbit/s" in format_second(bulk.second(0))
    assert any("2.0 Mbit/s" in l for l in format_summary(bulk.summary(1.0)))
