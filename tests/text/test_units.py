from flowtts.text.units import end_reference, join_texts


def test_a_reference_transcript_ends_in_a_sentence_end_before_the_new_text():
    assert end_reference("Hello") == "Hello. "
    assert end_reference(" Hello. ") == "Hello. "
    assert end_reference("Hello.") == "Hello. "
    assert end_reference("你好。") == "你好。"
    assert join_texts("Hi", "there.") == "Hi. there."
    assert join_texts(["ni3", "hao3"], ["a1"]) == ["ni3", "hao3", " ", "a1"]
