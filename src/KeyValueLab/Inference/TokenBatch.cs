using static TorchSharp.torch;

namespace KeyValueLab.Inference;

/// <summary>Which end of a row the padding goes to.</summary>
public enum PaddingSide
{
    /// <summary>Tokens first, padding after: positions are 0..len-1 as usual (scoring, training).</summary>
    Right,

    /// <summary>Padding first, tokens after: every row ends at the last column (batched generation).</summary>
    Left,
}

/// <summary>
/// Sequences of token ids of different lengths as one padded <c>[B, T]</c> int64 batch with its
/// attention mask (1 = token, 0 = padding) and position ids (0 at each row's first real token).
/// The tensors belong to the dispose scope that is current when the batch is made.
/// </summary>
public sealed class TokenBatch : IDisposable
{
    /// <summary>Token ids <c>[B, T]</c> (int64); padding holds <see cref="PadId"/>.</summary>
    public Tensor InputIds { get; }

    /// <summary>Attention mask <c>[B, T]</c> (int64): 1 for real tokens, 0 for padding.</summary>
    public Tensor AttentionMask { get; }

    /// <summary>Position ids <c>[B, T]</c> (int64): 0 at each row's first real token, padding clamped to 0.</summary>
    public Tensor PositionIds { get; }

    /// <summary>Number of real tokens in each row.</summary>
    public IReadOnlyList<int> Lengths { get; }

    /// <summary>Padded length T (the longest row).</summary>
    public int Width { get; }

    public PaddingSide Side { get; }

    public int PadId { get; }

    private TokenBatch(Tensor ids, Tensor mask, Tensor positions, int[] lengths, int width, PaddingSide side, int padId)
    {
        (InputIds, AttentionMask, PositionIds) = (ids, mask, positions);
        (Lengths, Width, Side, PadId) = (lengths, width, side, padId);
    }

    /// <summary>Tokens first, padding after.</summary>
    public static TokenBatch RightPadded(IReadOnlyList<IReadOnlyList<int>> sequences, int padId = 0, Device? device = null) =>
        Create(sequences, PaddingSide.Right, padId, device);

    /// <summary>Padding first, tokens after.</summary>
    public static TokenBatch LeftPadded(IReadOnlyList<IReadOnlyList<int>> sequences, int padId = 0, Device? device = null) =>
        Create(sequences, PaddingSide.Left, padId, device);

    /// <summary>
    /// Pads <paramref name="sequences"/> to the longest one. <paramref name="padId"/> is never attended
    /// to, so any id works (0, or the EOS id as Hugging Face does for GPT-2). The tensors are created on
    /// <paramref name="device"/> (default: the CPU).
    /// </summary>
    public static TokenBatch Create(IReadOnlyList<IReadOnlyList<int>> sequences, PaddingSide side, int padId = 0, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (sequences.Count == 0) throw new ArgumentException("a batch needs at least one sequence", nameof(sequences));
        int b = sequences.Count;
        int[] lengths = sequences.Select(s => s.Count).ToArray();
        int t = Math.Max(1, lengths.Max());
        var ids = new long[b * t];
        var mask = new long[b * t];
        var positions = new long[b * t];
        for (int row = 0; row < b; row++)
        {
            int offset = side == PaddingSide.Left ? t - lengths[row] : 0;
            for (int col = 0; col < t; col++)
            {
                int j = col - offset; // index into the sequence, outside [0, len) for padding
                bool real = j >= 0 && j < lengths[row];
                ids[row * t + col] = real ? sequences[row][j] : padId;
                mask[row * t + col] = real ? 1 : 0;
                positions[row * t + col] = Math.Max(0, j);
            }
        }
        return new TokenBatch(
            tensor(ids, [b, t], ScalarType.Int64, device),
            tensor(mask, [b, t], ScalarType.Int64, device),
            tensor(positions, [b, t], ScalarType.Int64, device),
            lengths, t, side, padId);
    }

    /// <summary>Column of row <paramref name="row"/>'s token number <paramref name="index"/> (0-based).</summary>
    public int Column(int row, int index) => Side == PaddingSide.Left ? Width - Lengths[row] + index : index;

    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
        PositionIds.Dispose();
    }
}
