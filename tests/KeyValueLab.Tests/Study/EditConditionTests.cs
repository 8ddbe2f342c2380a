using System.Text.Json;
using KeyValueLab.Editing;
using KeyValueLab.Memory;
using KeyValueLab.Study;

namespace KeyValueLab.Tests.Study;

/// <summary>A study condition's method and side: parsed once where the study is read, typed after, written as the text they were.</summary>
public class EditConditionTests
{
    [Theory]
    [InlineData("keys", EditSide.Keys, null, "keys")]
    [InlineData(" Up ", EditSide.Keys, KeyKind.Up, "keys:up")]
    [InlineData("up_proj", EditSide.Keys, KeyKind.Up, "keys:up")]
    [InlineData("keys:gate", EditSide.Keys, KeyKind.Gate, "keys:gate")]
    [InlineData("gate_proj", EditSide.Keys, KeyKind.Gate, "keys:gate")]
    [InlineData("down_proj", EditSide.Values, null, "values")]
    [InlineData("value", EditSide.Values, null, "values")]
    public void SidesParseToTheirTypeAndWriteTheirCanonicalText(string text, EditSide side, KeyKind? keys, string canonical)
    {
        var parsed = StudySide.Parse(text);
        Assert.Equal((side, keys), (parsed.Side, parsed.Keys));
        Assert.Equal(canonical, parsed.ToString());
        Assert.Equal(parsed, StudySide.Parse(canonical));
    }

    [Fact]
    public void UnknownSidesAndMethodsAreRefusedWithTheirLine()
    {
        Assert.Equal("unknown side \"both ways\" (keys, keys:up, keys:gate, values)", Assert.Throws<ArgumentException>(() => StudySide.Parse("both ways")).Message);
        Assert.StartsWith("unknown editor \"rone\" (known: ft, ", Assert.Throws<ArgumentException>(() => EditorMethod.Parse("rone")).Message);
        Assert.Equal("keyrome", EditorMethod.Parse(" Key-ROME ").Name);
    }

    /// <summary>The editor choice takes the typed side as it is (keys:up = keys with the up matrix), and the canonical JSON writes the texts.</summary>
    [Fact]
    public void TheChoiceAndTheCanonicalJsonComeFromTheTypedCondition()
    {
        var condition = StudySpec.Default().Editing!.Conditions[0];
        Assert.Equal(("ft", "keys:up", "ft/keys:up/L1"), (condition.Method.Name, condition.Side.ToString(), condition.Id));
        var inputs = new StudyInputs([], null, null, new Dictionary<string, string>(), null, "m");
        var choice = StudyPlan.Choice(condition, inputs, new EditingSpec());
        Assert.Equal(("ft", EditSide.Keys, "up"), (choice.Method, choice.Side, choice.KeyKinds));
        var json = JsonSerializer.SerializeToNode(condition, StudySpec.Json)!;
        Assert.Equal(("ft", "keys:up"), ((string)json["method"]!, (string)json["side"]!));
    }
}
