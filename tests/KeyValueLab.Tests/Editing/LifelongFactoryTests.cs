using KeyValueLab.Editing;

namespace KeyValueLab.Tests.Editing;

/// <summary>The factory builds AlphaEdit, Key-AlphaEdit and Key-MEMIT from the shipped hyperparameter files.</summary>
public sealed class LifelongFactoryTests : IClassFixture<EditorTests.Stories>
{
    private readonly EditorTests.Stories _f;
    public LifelongFactoryTests(EditorTests.Stories f) => _f = f;

    [Fact]
    public void AlphaEditTakesLlama3ValuesAndOverrides()
    {
        var editor = EditorFactory.Create(_f.Loaded.Model, new EditorChoice { Method = "alphaedit", Layers = "1-2", Overrides = HyperparameterOverrides.Parse("alphaedit", ["l2=3", "v_lr=0.2"]), StatsDir = _f.Cache.Path });
        var alpha = Assert.IsType<AlphaEditEditor>(editor);
        Assert.Equal(new NullSpaceSettings(2e-2, 3), alpha.NullSpace);
        var json = editor.Hyperparameters;
        Assert.Equal("AlphaEdit", editor.Method);
        Assert.Equal(3.0, json["l2"]!.GetValue<double>());
        Assert.Equal(0.02, json["nullspace_threshold"]!.GetValue<double>());
        Assert.Equal(0.2, json["v_lr"]!.GetValue<double>());
        Assert.Equal(25, json["v_num_grad_steps"]!.GetValue<int>());   // Llama-3-8B's file
        Assert.Null(json["mom2_update_weight"]);
        Assert.Equal([1, 2], editor.Scope.Layers);
        Assert.Equal(EditSide.Values, editor.Scope.Side);
        alpha.Dispose();
    }

    [Theory]
    [InlineData("keyalphaedit", typeof(KeyAlphaEditEditor), "KeyAlphaEdit")]
    [InlineData("keymemit", typeof(KeyMemitEditor), "KeyMEMIT")]
    public void KeySideEditorsEditTheUpKeysOfLlama(string method, Type type, string name)
    {
        var editor = EditorFactory.Create(_f.Loaded.Model, new EditorChoice { Method = method, Layers = "2", StatsDir = _f.Cache.Path });
        Assert.IsType(type, editor);
        Assert.Equal(name, editor.Method);
        Assert.Equal(EditSide.Keys, editor.Scope.Side);
        Assert.Equal([KeyValueLab.Memory.KeyKind.Up], editor.Scope.KeyKinds);
        Assert.Equal(["model.layers.2.mlp.up_proj.weight"], editor.ParameterNames(_f.Loaded.Model));
        ((IDisposable)editor).Dispose();
    }

    [Theory]
    [InlineData("alphaedit", "keys", "AlphaEdit edits the values")]
    [InlineData("keymemit", "values", "KeyMEMIT edits the keys")]
    public void WrongSideIsRefused(string method, string side, string message)
    {
        var e = Assert.Throws<ArgumentException>(() => EditorFactory.Create(_f.Loaded.Model, new EditorChoice { Method = method, Side = EditScope.ParseSide(side), Layers = "1" }));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }
}
