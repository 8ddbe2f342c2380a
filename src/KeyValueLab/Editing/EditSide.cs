using KeyValueLab.Memory;
using TorchSharp.Modules;

namespace KeyValueLab.Editing;

/// <summary>Which FFN matrices an editor changes: the keys (first matrix), the values (second), or both.</summary>
public enum EditSide { Keys, Values, Both }

/// <summary>The matrices an edit may change: side, layers and, for Llama, which key matrices.</summary>
/// <param name="Side">Keys, values or both.</param>
/// <param name="Layers">Layers edited.</param>
/// <param name="KeyKinds">Llama: <c>[Gate]</c>, <c>[Up]</c> or both; null = every key matrix the model has.</param>
public sealed record EditScope(EditSide Side, IReadOnlyList<int> Layers, IReadOnlyList<KeyKind>? KeyKinds = null)
{
    /// <summary>Parses "keys", "values" or "both".</summary>
    public static EditSide ParseSide(string text) => text.Trim().ToLowerInvariant() switch
    {
        "keys" or "key" => EditSide.Keys,
        "values" or "value" => EditSide.Values,
        "both" => EditSide.Both,
        _ => throw new ArgumentException($"side must be keys, values or both, not \"{text}\""),
    };

    /// <summary>Parses Llama key matrices: "gate", "up", "both" (or "gate+up"); null or "" = all.</summary>
    public static IReadOnlyList<KeyKind>? ParseKeyKinds(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" => null,
        "gate" => [KeyKind.Gate],
        "up" => [KeyKind.Up],
        "both" or "gate+up" or "gate,up" => [KeyKind.Gate, KeyKind.Up],
        "fc" => [KeyKind.Fc],
        _ => throw new ArgumentException($"key matrices must be gate, up or both, not \"{text}\""),
    };

    /// <summary>Parses "5", "3-8" or "3,4,7".</summary>
    public static IReadOnlyList<int> ParseLayers(string text)
    {
        var layers = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = part.IndexOf('-', 1);
            if (dash > 0 && int.TryParse(part[..dash], out int a) && int.TryParse(part[(dash + 1)..], out int b) && a <= b)
                layers.AddRange(Enumerable.Range(a, b - a + 1));
            else if (int.TryParse(part, out int one)) layers.Add(one);
            else throw new ArgumentException($"layers must look like 5, 3-8 or 3,4,7, not \"{text}\"");
        }
        return layers.Count > 0 ? layers.Distinct().Order().ToList() : throw new ArgumentException("no layers given");
    }

    /// <summary>The key kinds this scope edits on <paramref name="memory"/>'s architecture.</summary>
    public IReadOnlyList<KeyKind> ResolveKeyKinds(FfnMemory memory)
    {
        if (KeyKinds is null) return memory.KeyKinds;
        foreach (var k in KeyKinds)
            if (!memory.KeyKinds.Contains(k))
                throw new ArgumentException($"{memory.Model.Config.ModelType} has key matrices {string.Join(", ", memory.KeyKinds)}, not {k}");
        return KeyKinds;
    }

    /// <summary>
    /// The live weight matrices in scope, by state-dict name (in layer order; keys before values). A matrix kept in its
    /// stored dtype becomes an fp32 master here (<see cref="FfnMemory.Keys"/>): call it to edit, <see cref="MatrixNames"/> to name.
    /// </summary>
    public IReadOnlyList<(string Name, Parameter Weight)> Matrices(FfnMemory memory) =>
        [.. InScope(memory).Select(m => (m.Name, m.Keys ? memory.Keys(m.Layer, m.Kind) : memory.Values(m.Layer)))];

    /// <summary>The state-dict names of <see cref="Matrices"/> (checking the layers and key kinds), leaving every weight as it is held.</summary>
    public IReadOnlyList<string> MatrixNames(FfnMemory memory) => [.. InScope(memory).Select(m => m.Name)];

    private List<(string Name, int Layer, KeyKind? Kind, bool Keys)> InScope(FfnMemory memory)
    {
        foreach (int layer in Layers)
            if (layer < 0 || layer >= memory.Layers) throw new ArgumentException($"layer {layer} is not a layer of this model (0..{memory.Layers - 1})");
        var list = new List<(string, int, KeyKind?, bool)>();
        foreach (int layer in Layers)
        {
            if (Side is EditSide.Keys or EditSide.Both)
                foreach (var kind in ResolveKeyKinds(memory))
                    list.Add((memory.KeysName(layer, Kind(memory, kind)), layer, Kind(memory, kind), true));
            if (Side is EditSide.Values or EditSide.Both)
                list.Add((memory.ValuesName(layer), layer, null, false));
        }
        return list;
    }

    /// <summary>Human-readable label, e.g. "keys(gate) L3" or "values L13-17".</summary>
    public string Label(FfnMemory memory)
    {
        string side = Side.ToString().ToLowerInvariant();
        if (Side != EditSide.Values && memory.KeyKinds.Count > 1) side += "(" + string.Join("+", ResolveKeyKinds(memory)).ToLowerInvariant() + ")";
        return $"{side} L{string.Join(",", Layers)}";
    }

    private static KeyKind? Kind(FfnMemory memory, KeyKind kind) => memory.KeyKinds.Count == 1 ? null : kind;
}
