module example.com/my-project

go 1.22
