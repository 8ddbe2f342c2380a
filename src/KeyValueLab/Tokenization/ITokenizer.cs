namespace KeyValueLab.Tokenization;

// Placeholder for the contract the `tok` branch provides; theirs replaces it at merge.
/// <summary>Text ↔ token ids for one model's vocabulary.</summary>
public interface ITokenizer
{
    int VocabSize { get; }
    int? BosId { get; }
    int? EosId { get; }
    IReadOnlyList<int> Encode(string text, bool addBos = false);
    string Decode(IEnumerable<int> ids);
    string DecodeToken(int previousId, int id);
    byte[] DecodeTokenBytes(int previousId, int id);
    string TokenText(int id);
}
