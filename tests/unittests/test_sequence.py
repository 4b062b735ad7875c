import torch

from speechbrain_mowe.lobes.sequence import align_frames, splice, to_absolute, to_relative


def test_relative_lengths_round_trip():
    lens = torch.tensor([7, 13, 1, 20])
    assert torch.equal(to_absolute(to_relative(lens, 20), 20), lens)


def test_align_frames_reads_only_valid_frames():
    feats = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)
    feats[1, 4:] = 1e6  # padding of the second example
    out = align_frames(feats, torch.tensor([10, 4]), torch.tensor([5, 8]), 8)
    assert out.shape == (2, 8, 1)
    assert out[1].max() <= 3.0  # never reads the 1e6 padding
    assert torch.equal(out[0, 5:], torch.zeros(3, 1))  # past the target length
    # identity when lengths match
    same = align_frames(feats[:1], torch.tensor([10]), torch.tensor([10]), 10)
    assert torch.allclose(same, feats[:1])


def test_splice_matches_per_example_concatenation():
    gen = torch.Generator().manual_seed(1)
    a = torch.randint(0, 50, (3, 4), generator=gen)
    b = torch.randint(0, 50, (3, 6), generator=gen)
    la, lb = torch.tensor([4, 1, 2]), torch.tensor([3, 6, 0])
    for left_pad in (False, True):
        out, mask, starts = splice([(a, la), (b, lb)], left_pad=left_pad, fill=-1)
        for i in range(3):
            expected = torch.cat([a[i, : la[i]], b[i, : lb[i]]])
            row = out[i][mask[i]]
            assert torch.equal(row, expected)
            assert torch.all(out[i][~mask[i]] == -1)
            content = mask[i].nonzero().flatten()
            assert bool((content[1:] - content[:-1] == 1).all())  # contiguous
            assert int(content[0]) == int(starts[0][i])
        ends = mask.long().cumsum(1).argmax(1)
        assert bool((ends == mask.shape[1] - 1).all()) == left_pad
