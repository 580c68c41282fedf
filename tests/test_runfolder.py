"""dfhelpers.runfolder: the label mapping every metric and figure shares."""

import pandas as pd
import pytest

from dfhelpers import runfolder


def test_label_index_maps_real_to_0_and_fake_to_1_in_order_whatever_the_index():
    labels = pd.Series(["FAKE", "REAL", "FAKE"], index=[7, 3, 5])
    assert runfolder.label_index(labels).tolist() == [1, 0, 1]
    assert runfolder.label_index(labels).dtype == "int64" and len(runfolder.label_index([])) == 0


@pytest.mark.parametrize("label", [None, "", "fake"])
def test_label_index_refuses_a_label_that_is_neither_real_nor_fake(label):
    with pytest.raises(ValueError, match="neither REAL nor FAKE"):
        runfolder.label_index(["REAL", label])
