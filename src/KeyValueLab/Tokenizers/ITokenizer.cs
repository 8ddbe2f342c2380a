namespace KeyValueLab.Tokenizers;

// Placeholder for the contract the `tok` branch provides; replaced by theirs at merge.
/// <summary>Text to token ids and back.</summary>
public interface ITokenizer
{
    /// <summary>Token ids of <paramref name="text"/>, with the BOS id first when <paramref name="addBos"/>.</summary>
    IReadOnlyList<int> Encode(string text, bool addBos);

    /// <summary>The text of a sequence of ids.</summary>
    string Decode(IEnumerable<int> ids);

    /// <summary>The text <paramref name="id"/> adds after <paramref name="prev"/> (for streaming output).</summary>
    string DecodeToken(int prev, int id);

    int? BosId { get; }
    int? EosId { get; }
}
