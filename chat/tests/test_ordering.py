"""SeqOrderer: every seq reaches the socket once, in order, whatever order the publishes arrive in."""

from chat.ordering import SeqOrderer


def test_in_order_offers_pass_straight_through():
    orderer = SeqOrderer(next_seq=1)
    assert orderer.offer(1, "m1") == ["m1"]
    assert orderer.offer(2, "m2") == ["m2"]
    assert orderer.hole() is None
    assert orderer.next_seq == 3


def test_an_offer_ahead_of_a_hole_waits_until_the_hole_is_offered():
    orderer = SeqOrderer(next_seq=1)
    assert orderer.offer(3, "m3") == []
    assert orderer.hole() == (0, 2)
    assert orderer.offer(2, "m2") == []
    assert orderer.hole() == (0, 1)
    assert orderer.offer(1, "m1") == ["m1", "m2", "m3"]
    assert orderer.hole() is None
    assert orderer.next_seq == 4


def test_seqs_below_next_seq_are_dropped():
    orderer = SeqOrderer(next_seq=5)  # 1..4 predate the socket or were replayed
    assert orderer.offer(4, "m4") == []
    assert orderer.offer(1, "m1") == []
    assert orderer.hole() is None
    assert orderer.offer(5, "m5") == ["m5"]


def test_a_repeated_offer_is_delivered_once():
    orderer = SeqOrderer(next_seq=1)
    assert orderer.offer(1, "m1") == ["m1"]
    assert orderer.offer(1, "m1 again") == []
    assert orderer.offer(3, "m3") == []
    assert orderer.offer(3, "m3 again") == []
    assert orderer.offer(2, "m2") == ["m2", "m3"]


def test_fill_sends_the_hole_from_the_database_then_what_waited_behind_it():
    orderer = SeqOrderer(next_seq=1)
    orderer.offer(4, "m4")
    after, upto = orderer.hole()
    assert (after, upto) == (0, 3)
    assert orderer.fill(upto, {1: "db1", 2: "db2", 3: "db3"}) == ["db1", "db2", "db3", "m4"]
    assert orderer.hole() is None
    assert orderer.next_seq == 5


def test_fill_skips_seqs_the_database_no_longer_holds():
    orderer = SeqOrderer(next_seq=1)
    orderer.offer(4, "m4")
    assert orderer.fill(3, {2: "db2"}) == ["db2", "m4"]  # 1 and 3 were deleted
    assert orderer.next_seq == 5


def test_fill_prefers_a_published_text_already_waiting():
    orderer = SeqOrderer(next_seq=1)
    orderer.offer(2, "m2")
    orderer.offer(4, "m4")
    assert orderer.fill(3, {1: "db1", 2: "db2", 3: "db3"}) == ["db1", "m2", "db3", "m4"]


def test_a_late_publish_after_a_fill_is_dropped():
    orderer = SeqOrderer(next_seq=1)
    orderer.offer(2, "m2")
    assert orderer.fill(1, {1: "db1"}) == ["db1", "m2"]
    assert orderer.offer(1, "m1 late") == []
    assert orderer.offer(3, "m3") == ["m3"]


def test_fill_leaves_a_later_hole_for_the_next_round():
    orderer = SeqOrderer(next_seq=1)
    orderer.offer(2, "m2")
    orderer.offer(5, "m5")
    assert orderer.fill(1, {1: "db1"}) == ["db1", "m2"]
    assert orderer.hole() == (2, 4)
    assert orderer.fill(4, {3: "db3", 4: "db4"}) == ["db3", "db4", "m5"]
    assert orderer.hole() is None


def test_a_stale_fill_does_not_rewind_or_repeat():
    orderer = SeqOrderer(next_seq=1)
    orderer.offer(3, "m3")
    upto = orderer.hole()[1]
    # The late publishes arrive while the database is being read.
    assert orderer.offer(1, "m1") == ["m1"]
    assert orderer.offer(2, "m2") == ["m2", "m3"]
    assert orderer.fill(upto, {1: "db1", 2: "db2"}) == []
    assert orderer.next_seq == 4


def test_a_known_tail_with_nothing_waiting_is_a_hole_up_to_it():
    orderer = SeqOrderer(next_seq=4)
    orderer.expect(3)  # delivered already
    assert orderer.hole() is None
    orderer.expect(6)
    assert orderer.hole() == (3, 6)
    assert orderer.offer(4, "m4") == ["m4"]
    assert orderer.hole() == (4, 6)
    assert orderer.fill(6, {6: "m6"}) == ["m6"]  # 5 was deleted
    assert orderer.hole() is None
    assert orderer.next_seq == 7
    orderer.expect(5)  # an older check arriving late changes nothing
    assert orderer.hole() is None
