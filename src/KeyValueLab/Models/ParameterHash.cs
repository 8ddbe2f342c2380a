using System.Security.Cryptography;
using System.Text;
using static TorchSharp.torch;

namespace KeyValueLab.Models;

/// <summary>A SHA-256 fingerprint of a model's parameters, for bit-exact comparisons in tests and logs.</summary>
public static class ParameterHash
{
    private const long ChunkBytes = 1 << 26;

    /// <summary>
    /// Lower-case hex SHA-256 over every parameter in ordinal name order: name, dtype, shape, then the raw
    /// bytes of its values (contiguous, on the CPU). Equal hashes mean bit-identical parameters.
    /// </summary>
    /// <remarks>
    /// A frozen weight (<see cref="FrozenLinear"/>: kept as stored, or NF4) is hashed as the fp32 matrix it computes with, so
    /// the hash does not change when an editor makes it an fp32 master, and equals that of the same weights widened up front.
    /// </remarks>
    public static string Sha256(nn.Module model, IEnumerable<string>? names = null)
    {
        var frozen = FrozenLinear.FrozenIn(model).ToDictionary(f => f.Name + ".weight", f => f.Linear, StringComparer.Ordinal);
        var frozenFused = model.named_modules().Where(m => m.module is FusedLinear { Frozen: not null })
            .ToDictionary(m => m.name + ".weight", m => ((FusedLinear)m.module).Frozen!, StringComparer.Ordinal);  // NF4 at load
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var chosen = (names ?? parameters.Keys).Distinct().Order(StringComparer.Ordinal);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (string name in chosen)
        {
            Tensor p = parameters.TryGetValue(name, out var found) ? found : throw new ArgumentException($"the model has no parameter {name}", nameof(names));
            using var scope = NewDisposeScope();
            if (frozen.TryGetValue(name, out var linear)) p = FrozenLinear.Weight(linear);
            else if (frozenFused.TryGetValue(name, out var whole)) p = whole.Widen(0, whole.Shape[0]);
            sha.AppendData(Encoding.UTF8.GetBytes($"{name}\0{p.dtype}\0{string.Join(",", p.shape)}\0"));
            var flat = p.detach().cpu().contiguous().view(-1);
            long count = flat.numel(), perChunk = Math.Max(1, ChunkBytes / flat.ElementSize);
            for (long start = 0; start < count; start += perChunk)
                using (var part = flat.narrow(0, start, Math.Min(perChunk, count - start)))
                    sha.AppendData(part.bytes);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }
}
