using KeyValueLab.Inference;
using TorchSharp;

namespace KeyValueLab.Tests.Inference;

public class TokenBatchTests
{
    private static readonly IReadOnlyList<int>[] Rows = [[5, 6, 7], [8], [9, 10]];

    private static long[] Flat(torch.Tensor t) => t.data<long>().ToArray();

    [Fact]
    public void RightPaddingPutsTokensFirst()
    {
        using var scope = torch.NewDisposeScope();
        using var batch = TokenBatch.RightPadded(Rows, padId: 99);
        Assert.Equal(new long[] { 3, 3 }, batch.InputIds.shape);
        Assert.Equal(new long[] { 5, 6, 7, 8, 99, 99, 9, 10, 99 }, Flat(batch.InputIds));
        Assert.Equal(new long[] { 1, 1, 1, 1, 0, 0, 1, 1, 0 }, Flat(batch.AttentionMask));
        Assert.Equal(new long[] { 0, 1, 2, 0, 1, 2, 0, 1, 2 }, Flat(batch.PositionIds));
        Assert.Equal(torch.ScalarType.Int64, batch.InputIds.dtype);
        Assert.Equal(1, batch.Column(2, 1));
    }

    [Fact]
    public void LeftPaddingEndsEveryRowAtTheLastColumn()
    {
        using var scope = torch.NewDisposeScope();
        using var batch = TokenBatch.LeftPadded(Rows);
        Assert.Equal(new long[] { 5, 6, 7, 0, 0, 8, 0, 9, 10 }, Flat(batch.InputIds));
        Assert.Equal(new long[] { 1, 1, 1, 0, 0, 1, 0, 1, 1 }, Flat(batch.AttentionMask));
        Assert.Equal(new long[] { 0, 1, 2, 0, 0, 0, 0, 0, 1 }, Flat(batch.PositionIds));
        Assert.Equal(2, batch.Column(1, 0));
        Assert.Equal(new[] { 3, 1, 2 }, batch.Lengths);
    }

    [Fact]
    public void EmptyBatchIsRefused() =>
        Assert.Throws<ArgumentException>(() => TokenBatch.RightPadded([]));
}
