"""The default prompt of `hidden_state_clusters`: a neutral English paragraph written for
attnflow (no quoted or copyrighted text), 148 WordPiece tokens with all-MiniLM-L6-v2's
tokenizer (150 with `[CLS]` and `[SEP]`)."""

PARAGRAPH = (
    "The river rises in a ring of low hills, where rain and melting snow gather in small "
    "streams that join in a narrow valley. For its first few miles it runs fast and cold over "
    "stones, past farms, mills and stands of alder and willow. Below the old market town the "
    "valley opens, the current slows, and the water grows wide and brown with silt. Herons "
    "wait in the shallows, and in spring the meadows on either bank flood for several weeks. "
    "Barges once carried grain, timber and coal downstream to the harbour, but today the river "
    "is used mostly by rowers, anglers and people walking along the towpath. Near the coast it "
    "divides into channels that wind through salt marsh before reaching the sea."
)
